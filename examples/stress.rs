//! Abuse and soak tests for a running muxcast (issue 6, "hostile world").
//!
//! ```text
//! cargo run --release --example stress -- churn --addr 127.0.0.1:8080 --pid PID
//! cargo run --release --example stress -- abuse --addr 127.0.0.1:8080 --pid PID \
//!     --source testdata/h264_aac.mkv --header-timeout 5
//! ```
//!
//! `churn`: connect/disconnect cycles of live-MKV viewers from a few threads. Cycle `i`
//! is, by `i % 6`: 0–2 clean (full request, head and some body read, `shutdown(Write)`,
//! then read to the server's close), 3 RST (`SO_LINGER` 0, close), 4 mid-header (half a
//! request head, close), 5 mid-body (head and 4 KiB of body read, close with unread data).
//! With `--pid`, the server's RSS (`VmRSS`) and open descriptors (`/proc/PID/fd`) are
//! taken at a baseline (after the GOP window filled and a warm-up), right after the
//! cycles, and after a settle; `/status.json` must show zero clients at the end.
//!
//! `abuse`: good viewers read `--path` continuously for `--duration` seconds; one second
//! in, slow-loris connections (a request head one byte every `--loris-interval` seconds)
//! and stalled readers (a GET of `--path`, then never a read) pile on. Every good viewer's
//! body is demuxed with matroska-demuxer and checked against `--source`: per track, the
//! frames must be a contiguous run of the source's (looped) frames, payload for payload,
//! and their timestamps must have no hole (no gap of 1.9 frame durations or more; one
//! missing frame makes a gap of 2). The frames counted in the span that must be complete
//! are printed next to the number the span and frame rate give (a looped file that wraps
//! with a gap of its own, as h264_aac.mkv's video does, counts about one frame short per
//! loop there). Slow-loris connections must be closed by the server near
//! `--header-timeout`; stalled readers are then held until the server closes them
//! (`--client-timeout`) or `--stalled-wait` runs out.
//!
//! `soak`: `--viewers` clients (default 500) for `--duration` seconds (default 1800), with
//! churn. Most are live-MKV viewers that each watch for a random `--watch-min`..`--watch-max`
//! seconds (5–60), then leave (half cleanly: `shutdown(Write)` and read to the server's
//! close; a quarter by RST; a quarter mid-body, closing with unread data) and reconnect at
//! once; every session's body is demuxed with matroska-demuxer and, with `--source`,
//! checked against the source as `abuse` checks its good viewers. `--hls-share` of them
//! (10 %) are LL-HLS clients: the multivariant playlist, one rendition's media playlist,
//! its init segment and latest segment, then as a player: a blocking reload
//! (`_HLS_msn`/`_HLS_part`) for the hinted part and every new part it lists (one in five
//! is a plain HLS client that reloads every second and fetches whole segments); their
//! sessions end cleanly, by RST, or with a blocking request pending. `--dash` clients
//! (5) fetch the MPD about once a second, the init segments, and each new segment by
//! `$Time$`, the one being written included (chunked). Playlists are parsed with m3u8-rs,
//! the MPD with dash-mpd-core, init segments, parts and segments box by box with mp4-atom
//! (each mdat must hold exactly the samples of its moof). Every `--sample-every` seconds
//! (10): the server's VmRSS, RssAnon and descriptors (`--pid`) and its /status.json
//! figures, printed as a table row (and to `--csv`). At the end: least-squares slopes of
//! RSS, RssAnon and descriptors over the samples after `--warmup` (120 s), the clients'
//! totals and errors, and the WARN/ERROR lines of `--server-log`, deduplicated.
//!
//! Every loop is bounded in count and in time. The process exits 1 when a check fails.
//! The last line of output is one JSON object with every figure.

use std::io::{self, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HELP: &str = "\
stress: abuse and soak tests against a running muxcast.

USAGE:
    stress churn --addr HOST:PORT [OPTIONS]
    stress abuse --addr HOST:PORT --source FILE [OPTIONS]
    stress soak --addr HOST:PORT --pid PID [OPTIONS]

COMMON OPTIONS:
    --addr ADDR          the server (required)
    --path PATH          live-MKV path [default: /live/live.mkv]
    --stream NAME        stream name in /status.json [default: live]
    --pid PID            the server's process id: RSS and descriptor figures from /proc
    --quiet              print only the JSON line

CHURN OPTIONS:
    --cycles N           connect/disconnect cycles [default: 10000]
    --threads T          client threads [default: 8]
    --warmup-cycles N    cycles before the baseline [default: 200]
    --time-limit SECS    stop issuing cycles after this long [default: 100]
    --settle SECS        wait before the last measurement [default: 3]
    --window-wait SECS   at most this long for the GOP window to fill before the
                         baseline [default: 60]

ABUSE OPTIONS:
    --source FILE        the file the server plays (--loop), for the frame check
    --good N             good viewers [default: 100]
    --loris N            slow-loris connections [default: 1000]
    --stalled N          stalled readers [default: 1000]
    --duration SECS      how long the good viewers read [default: 20]
    --header-timeout S   the server's --header-timeout, for the verdict [default: 5]
    --loris-interval S   seconds between two bytes of a slow-loris head [default: 1]
    --stalled-wait SECS  after the good viewers, at most this long for the server to
                         close the stalled readers [default: 45]

SOAK OPTIONS:
    --duration SECS      how long the clients run [default: 1800, at most 86400]
    --viewers N          concurrent clients, all kinds [default: 500]
    --hls-share F        share of them that are HLS clients [default: 0.10]
    --dash N             DASH clients among them [default: 5]
    --watch-min SECS     shortest session [default: 5]
    --watch-max SECS     longest session [default: 60]
    --sample-every SECS  sampling interval [default: 10]
    --warmup SECS        samples before this are left out of the slopes [default: 120]
    --max-slope-pct P    pass if RSS grows by less than P % per 10 minutes [default: 1]
    --source FILE        the file the server plays: check every live-MKV session's frames
    --server-log FILE    the server's log: its WARN and ERROR lines are counted
    --csv FILE           also write the samples there
    --window-wait SECS   at most this long for the GOP window to fill first [default: 240]
    --seed N             of the clients' random choices [default: 1]
";

const MAX_CYCLES: usize = 1_000_000;
const MAX_CONNS: usize = 10_000;
const MAX_SECS: f64 = 600.0;
const MAX_SOAK_SECS: f64 = 86_400.0;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A timestamp gap of this many frame durations is a hole: one missing frame makes a gap
/// of 2. Where a looped file wraps, the gap is the file's own (h264_aac.mkv: video starts
/// at 21 ms and the loop is as long as the audio, 10026 ms: a 66 ms gap once per loop).
const HOLE: f64 = 1.9;

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("stress: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    let result = match args.command {
        Command::Churn => churn(&args),
        Command::Abuse => abuse(&args),
        Command::Soak => soak(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("stress: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Arguments

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Churn,
    Abuse,
    Soak,
}

struct Args {
    command: Command,
    addr: SocketAddr,
    path: String,
    stream: String,
    pid: Option<u32>,
    quiet: bool,
    cycles: usize,
    threads: usize,
    warmup_cycles: usize,
    time_limit: f64,
    settle: f64,
    window_wait: f64,
    source: Option<String>,
    good: usize,
    loris: usize,
    stalled: usize,
    duration: f64,
    header_timeout: f64,
    loris_interval: f64,
    stalled_wait: f64,
    viewers: usize,
    hls_share: f64,
    dash: usize,
    watch_min: f64,
    watch_max: f64,
    sample_every: f64,
    warmup: f64,
    max_slope_pct: f64,
    server_log: Option<String>,
    csv: Option<String>,
    seed: u64,
}

fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| e.to_string();
    let command = match parser.next().map_err(err)? {
        Some(Value(v)) if v == "churn" => Command::Churn,
        Some(Value(v)) if v == "abuse" => Command::Abuse,
        Some(Value(v)) if v == "soak" => Command::Soak,
        Some(Short('h')) | Some(Long("help")) | None => return Ok(None),
        Some(other) => return Err(format!("expected churn, abuse or soak, got {other:?}")),
    };
    let mut a = Args {
        command,
        addr: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
        path: "/live/live.mkv".into(),
        stream: "live".into(),
        pid: None,
        quiet: false,
        cycles: 10_000,
        threads: 8,
        warmup_cycles: 200,
        time_limit: 100.0,
        settle: 3.0,
        window_wait: 60.0,
        source: None,
        good: 100,
        loris: 1000,
        stalled: 1000,
        duration: 20.0,
        header_timeout: 5.0,
        loris_interval: 1.0,
        stalled_wait: 45.0,
        viewers: 500,
        hls_share: 0.10,
        dash: 5,
        watch_min: 5.0,
        watch_max: 60.0,
        sample_every: 10.0,
        warmup: 120.0,
        max_slope_pct: 1.0,
        server_log: None,
        csv: None,
        seed: 1,
    };
    if command == Command::Soak {
        a.duration = 1800.0;
        a.window_wait = 240.0;
    }
    let mut have_addr = false;
    fn val<T: std::str::FromStr>(p: &mut lexopt::Parser, name: &str) -> Result<T, String> {
        let v = p
            .value()
            .map_err(|e| e.to_string())?
            .string()
            .map_err(|e| e.to_string())?;
        v.parse()
            .map_err(|_| format!("{name}: {v:?} is not a valid value"))
    }
    fn secs(p: &mut lexopt::Parser, name: &str) -> Result<f64, String> {
        let v: f64 = val(p, name)?;
        if v.is_finite() && (0.0..=MAX_SECS).contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "{name}: {v} is not between 0 and {MAX_SECS} seconds"
            ))
        }
    }
    fn count(p: &mut lexopt::Parser, name: &str, max: usize) -> Result<usize, String> {
        let v: usize = val(p, name)?;
        if v <= max {
            Ok(v)
        } else {
            Err(format!("{name}: {v} is more than {max}"))
        }
    }
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("addr") => {
                a.addr = val(&mut parser, "--addr")?;
                have_addr = true;
            }
            Long("path") => a.path = val(&mut parser, "--path")?,
            Long("stream") => a.stream = val(&mut parser, "--stream")?,
            Long("pid") => a.pid = Some(val(&mut parser, "--pid")?),
            Long("quiet") => a.quiet = true,
            Long("cycles") => a.cycles = count(&mut parser, "--cycles", MAX_CYCLES)?,
            Long("threads") => a.threads = count(&mut parser, "--threads", 256)?.max(1),
            Long("warmup-cycles") => {
                a.warmup_cycles = count(&mut parser, "--warmup-cycles", MAX_CYCLES)?;
            }
            Long("time-limit") => a.time_limit = secs(&mut parser, "--time-limit")?,
            Long("settle") => a.settle = secs(&mut parser, "--settle")?,
            Long("window-wait") => a.window_wait = secs(&mut parser, "--window-wait")?,
            Long("source") => a.source = Some(val(&mut parser, "--source")?),
            Long("good") => a.good = count(&mut parser, "--good", MAX_CONNS)?,
            Long("loris") => a.loris = count(&mut parser, "--loris", MAX_CONNS)?,
            Long("stalled") => a.stalled = count(&mut parser, "--stalled", MAX_CONNS)?,
            Long("duration") if command == Command::Soak => {
                let v: f64 = val(&mut parser, "--duration")?;
                if !(v.is_finite() && (1.0..=MAX_SOAK_SECS).contains(&v)) {
                    return Err(format!(
                        "--duration: {v} is not between 1 and {MAX_SOAK_SECS} seconds"
                    ));
                }
                a.duration = v;
            }
            Long("duration") => a.duration = secs(&mut parser, "--duration")?,
            Long("header-timeout") => a.header_timeout = secs(&mut parser, "--header-timeout")?,
            Long("loris-interval") => {
                a.loris_interval = secs(&mut parser, "--loris-interval")?.max(0.01);
            }
            Long("stalled-wait") => a.stalled_wait = secs(&mut parser, "--stalled-wait")?,
            Long("viewers") => a.viewers = count(&mut parser, "--viewers", MAX_CONNS)?,
            Long("hls-share") => {
                let v: f64 = val(&mut parser, "--hls-share")?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("--hls-share: {v} is not between 0 and 1"));
                }
                a.hls_share = v;
            }
            Long("dash") => a.dash = count(&mut parser, "--dash", MAX_CONNS)?,
            Long("watch-min") => a.watch_min = secs(&mut parser, "--watch-min")?.max(0.1),
            Long("watch-max") => a.watch_max = secs(&mut parser, "--watch-max")?.max(0.1),
            Long("sample-every") => {
                a.sample_every = secs(&mut parser, "--sample-every")?.max(0.5);
            }
            Long("warmup") => a.warmup = secs(&mut parser, "--warmup")?,
            Long("max-slope-pct") => {
                let v: f64 = val(&mut parser, "--max-slope-pct")?;
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("--max-slope-pct: {v} is not a positive number"));
                }
                a.max_slope_pct = v;
            }
            Long("server-log") => a.server_log = Some(val(&mut parser, "--server-log")?),
            Long("csv") => a.csv = Some(val(&mut parser, "--csv")?),
            Long("seed") => a.seed = val(&mut parser, "--seed")?,
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if !have_addr {
        return Err("--addr is required".into());
    }
    if !a.path.starts_with('/') {
        return Err(format!("--path: {:?} must start with /", a.path));
    }
    if command == Command::Abuse && a.source.is_none() {
        return Err("abuse needs --source FILE (the file the server plays)".into());
    }
    if a.watch_max < a.watch_min {
        return Err(format!(
            "--watch-max {} is less than --watch-min {}",
            a.watch_max, a.watch_min
        ));
    }
    Ok(Some(a))
}

/// One descriptor per connection: take the hard limit as the soft one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server, seen from outside

/// RSS (KiB) and open descriptors of the server process, plus its /status.json figures.
#[derive(Clone, Debug, Default)]
struct Sample {
    t: f64,
    rss_kib: Option<u64>,
    /// `RssAnon` of /proc/PID/status: the heap and stacks, without mapped files.
    rss_anon_kib: Option<u64>,
    rss_file_kib: Option<u64>,
    /// `RssShmem`: the pages of the finished-segment memory files mapped in so far.
    rss_shmem_kib: Option<u64>,
    /// Bytes (KiB) and number of the memfd descriptors (finished segments,
    /// src/stream/segment_file.rs): in RAM, but in RSS only once their pages are mapped in.
    memfd_kib: Option<u64>,
    memfds: Option<usize>,
    fds: Option<usize>,
    connections: Option<u64>,
    clients: Option<u64>,
    clients_total: Option<u64>,
    /// Machine-wide: pages of TCP socket memory (`/proc/net/sockstat`, "TCP: ... mem").
    tcp_mem_pages: Option<u64>,
    window_bytes: Option<u64>,
    gops_held: Option<u64>,
    gops_skipped: Option<u64>,
}

impl Sample {
    /// Descriptors other than memory files: sockets, the listener, pipes. The memory
    /// files are the segment window (and cached playlists), which fills after the
    /// baseline is taken; a leaked connection shows here.
    fn non_memfd_fds(&self) -> Option<usize> {
        Some(self.fds?.saturating_sub(self.memfds.unwrap_or(0)))
    }

    fn json(&self) -> Value {
        json!({
            "t": (self.t * 10.0).round() / 10.0,
            "rss_kib": self.rss_kib,
            "rss_anon_kib": self.rss_anon_kib,
            "rss_file_kib": self.rss_file_kib,
            "rss_shmem_kib": self.rss_shmem_kib,
            "memfd_kib": self.memfd_kib,
            "memfds": self.memfds,
            "fds": self.fds,
            "connections": self.connections,
            "clients": self.clients,
            "clients_total": self.clients_total,
            "tcp_mem_pages": self.tcp_mem_pages,
            "window_bytes": self.window_bytes,
            "gops_held": self.gops_held,
            "gops_skipped": self.gops_skipped,
        })
    }

    fn line(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        format!(
            "RSS {} KiB, fds {}, connections {}, clients {} ({} served so far), window {} B / {} GOPs",
            opt(self.rss_kib),
            self.fds.map_or("?".to_string(), |v| v.to_string()),
            opt(self.connections),
            opt(self.clients),
            opt(self.clients_total),
            opt(self.window_bytes),
            opt(self.gops_held),
        )
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// A `KEY:  N kB` line of /proc/PID/status.
fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn tcp_mem_pages() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mem")?;
    words.next()?.parse().ok()
}

/// `net.ipv4.tcp_mem`: (no pressure below, pressure, hard limit), in pages.
fn tcp_mem_limits() -> Option<[u64; 3]> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
    let v: Vec<u64> = s
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    Some([*v.first()?, *v.get(1)?, *v.get(2)?])
}

/// Number and total size of the memory files (`/memfd:...`) among a process's descriptors.
fn memfd_usage(pid: u32) -> Option<(usize, u64)> {
    let (mut n, mut bytes) = (0usize, 0u64);
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let is_memfd =
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:"));
        if is_memfd && let Ok(m) = std::fs::metadata(e.path()) {
            n += 1;
            bytes += m.len();
        }
    }
    Some((n, bytes))
}

impl Sample {
    /// What the process holds (as bench/footprint.sh counts it): RssAnon + RssFile + the
    /// memory files' bytes (RssShmem is the part of those already mapped in).
    fn held_kib(&self) -> Option<u64> {
        Some(self.rss_anon_kib? + self.rss_file_kib? + self.memfd_kib?)
    }
}

fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// GET /status.json with `Connection: close`; the parsed document.
fn status_json(addr: SocketAddr) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /status.json HTTP/1.1\r\nHost: stress\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading /status.json: {e}"))?;
    let i = find(&buf, b"\r\n\r\n").ok_or("/status.json: no response head")?;
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "/status.json: {:?}",
            String::from_utf8_lossy(&buf[..i.min(80)])
        ));
    }
    serde_json::from_slice(&buf[i + 4..]).map_err(|e| format!("/status.json: {e}"))
}

fn sample(args: &Args, start: Instant) -> Sample {
    let mut s = Sample {
        t: start.elapsed().as_secs_f64(),
        tcp_mem_pages: tcp_mem_pages(),
        ..Sample::default()
    };
    if let Some(pid) = args.pid {
        s.rss_kib = rss_kib(pid);
        s.rss_anon_kib = proc_status_kib(pid, "RssAnon:");
        s.rss_file_kib = proc_status_kib(pid, "RssFile:");
        s.rss_shmem_kib = proc_status_kib(pid, "RssShmem:");
        if let Some((n, bytes)) = memfd_usage(pid) {
            s.memfds = Some(n);
            s.memfd_kib = Some(bytes / 1024);
        }
        s.fds = fd_count(pid);
    }
    if let Ok(doc) = status_json(args.addr) {
        s.connections = doc["server"]["connections"].as_u64();
        if let Some(st) = stream_of(&doc, &args.stream) {
            s.clients = st["clients"].as_u64();
            s.clients_total = st["clients_total"].as_u64();
            s.window_bytes = st["window_bytes"].as_u64();
            s.gops_held = st["gops_held"].as_u64();
            s.gops_skipped = st["gops_skipped"].as_u64();
        }
    }
    s
}

fn stream_of<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"].as_str() == Some(name))
}

/// Waits (bounded) until the stream is live and holds a GOP.
fn wait_live(args: &Args, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let last = match status_json(args.addr) {
            Ok(doc) => match stream_of(&doc, &args.stream) {
                Some(st) if st["gops_held"].as_u64().unwrap_or(0) >= 1 => return Ok(()),
                Some(st) => format!("stream {}: {}", args.stream, st["state"]),
                None => format!("no stream {:?} in /status.json", args.stream),
            },
            Err(e) => e,
        };
        if start.elapsed() > limit {
            return Err(format!("server not live within {limit:?}: {last}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (bounded) until the GOP window stops growing: no new maximum of `gops_held` for
/// four seconds. The window fills for ~client-queue / bitrate seconds after start, and the
/// server's RSS grows with it: a baseline taken earlier would show that as a leak.
fn wait_window_full(args: &Args, limit: Duration) -> (bool, u64) {
    let start = Instant::now();
    let mut max = 0u64;
    let mut since = Instant::now();
    while start.elapsed() < limit {
        if let Ok(doc) = status_json(args.addr)
            && let Some(st) = stream_of(&doc, &args.stream)
        {
            let g = st["gops_held"].as_u64().unwrap_or(0);
            if g > max {
                max = g;
                since = Instant::now();
            }
        }
        if max > 0 && since.elapsed() >= Duration::from_secs(4) {
            return (true, max);
        }
        thread::sleep(Duration::from_millis(250));
    }
    (false, max)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn request_head(path: &str, agent: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: stress\r\nUser-Agent: {agent}\r\n\r\n")
}

/// Reads a response head and at least `min_body` body bytes; returns (status, body read).
fn read_head(s: &mut TcpStream, min_body: usize) -> io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let mut head_end = None;
    loop {
        if head_end.is_none() {
            head_end = find(&buf, b"\r\n\r\n").map(|i| i + 4);
        }
        if let Some(h) = head_end
            && buf.len() - h >= min_body
        {
            let status = std::str::from_utf8(&buf[..h])
                .ok()
                .and_then(|t| t.split(' ').nth(1))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            return Ok((status, buf[h..].to_vec()));
        }
        if buf.len() > 1 << 20 {
            return Err(io::Error::other("response head too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the head and body",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Close sends RST instead of FIN.
fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor we own, with a correctly sized struct.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn say(args: &Args, line: impl AsRef<str>) {
    if !args.quiet {
        println!("{}", line.as_ref());
    }
}

fn percent(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { (a - b) / b * 100.0 }
}

// ---------------------------------------------------------------------------------------
// churn

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Clean,
    Rst,
    MidHeader,
    MidBody,
}

const KINDS: [Kind; 4] = [Kind::Clean, Kind::Rst, Kind::MidHeader, Kind::MidBody];

impl Kind {
    fn of(i: usize) -> Kind {
        match i % 6 {
            0..=2 => Kind::Clean,
            3 => Kind::Rst,
            4 => Kind::MidHeader,
            _ => Kind::MidBody,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Clean => "clean",
            Kind::Rst => "rst",
            Kind::MidHeader => "mid_header",
            Kind::MidBody => "mid_body",
        }
    }

    fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// One connect/disconnect cycle of a live-MKV viewer. `Ok(true)`: a clean close that the
/// server answered with RST instead of FIN.
fn cycle(addr: SocketAddr, path: &str, kind: Kind) -> Result<bool, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let req = request_head(path, "muxcast-stress-churn");
    if kind == Kind::MidHeader {
        s.write_all(&req.as_bytes()[..req.len() / 2])
            .map_err(|e| format!("write: {e}"))?;
        return Ok(false); // dropped: FIN after half a head
    }
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let min_body = if kind == Kind::MidBody { 4096 } else { 1 };
    let (status, _) = read_head(&mut s, min_body).map_err(|e| format!("head: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    match kind {
        Kind::Clean => {
            // FIN, then read until the server closes its side (it reads EOF and closes).
            s.shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            let deadline = Instant::now() + IO_TIMEOUT;
            let mut chunk = [0u8; 16384];
            loop {
                match s.read(&mut chunk) {
                    Ok(0) => return Ok(false),
                    Ok(_) if Instant::now() < deadline => {}
                    Ok(_) => return Err("server kept sending after our FIN".into()),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(true),
                    Err(e) => return Err(format!("server did not close after our FIN: {e}")),
                }
            }
        }
        Kind::Rst => set_linger_zero(&s)
            .map(|_| false)
            .map_err(|e| format!("SO_LINGER: {e}")),
        // Dropped with unread body bytes in the socket: the kernel answers with RST.
        Kind::MidBody | Kind::MidHeader => Ok(false),
    }
}

#[derive(Default)]
struct Tally {
    ok: [usize; 4],
    failed: [usize; 4],
    /// Clean closes the server answered with RST rather than FIN.
    clean_reset: usize,
    first_errors: Vec<String>,
}

/// Runs `cycles` cycles (numbered from `first`) over `threads` threads; returns the tally
/// and the seconds it took.
fn run_cycles(args: &Args, first: usize, cycles: usize, limit: Duration) -> (Tally, f64) {
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let deadline = start + limit;
    let mut handles = Vec::new();
    for _ in 0..args.threads.min(cycles.max(1)) {
        let (next, tally) = (next.clone(), tally.clone());
        let (addr, path) = (args.addr, args.path.clone());
        handles.push(thread::spawn(move || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cycles || Instant::now() > deadline {
                    return;
                }
                let kind = Kind::of(first + i);
                let r = cycle(addr, &path, kind);
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(reset) => {
                        t.ok[kind.index()] += 1;
                        t.clean_reset += usize::from(reset);
                    }
                    Err(e) => {
                        t.failed[kind.index()] += 1;
                        if t.first_errors.len() < 5 {
                            t.first_errors
                                .push(format!("cycle {i} ({}): {e}", kind.name()));
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let t = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    (t, secs)
}

fn churn(args: &Args) -> Result<bool, String> {
    let start = Instant::now();
    wait_live(args, Duration::from_secs(30))?;
    say(
        args,
        "churn: stream live; waiting for the GOP window to fill",
    );
    let (full, gops) = wait_window_full(args, Duration::from_secs_f64(args.window_wait));
    say(
        args,
        format!(
            "churn: window {} at {gops} GOPs after {:.1} s",
            if full { "full" } else { "still growing" },
            start.elapsed().as_secs_f64()
        ),
    );
    let (warm, _) = run_cycles(args, 0, args.warmup_cycles, Duration::from_secs(30));
    let warm_failed: usize = warm.failed.iter().sum();
    thread::sleep(Duration::from_secs(2));
    let baseline = sample(args, start);
    say(
        args,
        format!(
            "churn: warm-up {} cycles ({warm_failed} failed); baseline: {}",
            args.warmup_cycles,
            baseline.line()
        ),
    );

    let (tally, secs) = run_cycles(
        args,
        0,
        args.cycles,
        Duration::from_secs_f64(args.time_limit),
    );
    let after = sample(args, start);
    let done: usize = tally.ok.iter().sum::<usize>() + tally.failed.iter().sum::<usize>();
    let failed: usize = tally.failed.iter().sum();
    let rate = done as f64 / secs.max(1e-9);
    say(
        args,
        format!("churn: {done} cycles in {secs:.1} s = {rate:.0} cycles/s, {failed} failed"),
    );
    for k in KINDS {
        say(
            args,
            format!(
                "    {:<10} ok {:>6}  failed {:>4}",
                k.name(),
                tally.ok[k.index()],
                tally.failed[k.index()]
            ),
        );
    }
    say(
        args,
        format!(
            "    clean closes the server ended with RST instead of FIN: {}",
            tally.clean_reset
        ),
    );
    for e in &tally.first_errors {
        say(args, format!("    e.g. {e}"));
    }
    say(args, format!("churn: right after: {}", after.line()));
    thread::sleep(Duration::from_secs_f64(args.settle));
    let settled = sample(args, start);
    say(
        args,
        format!(
            "churn: after {:.0} s settle: {}",
            args.settle,
            settled.line()
        ),
    );

    // Verdicts.
    let mut ok = true;
    let mut problems = Vec::new();
    if done < args.cycles {
        problems.push(format!(
            "only {done} of {} cycles within the time limit",
            args.cycles
        ));
    }
    if failed > 0 {
        problems.push(format!("{failed} cycles failed"));
    }
    if settled.clients != Some(0) {
        problems.push(format!("/status.json clients = {:?}", settled.clients));
    }
    if settled.connections.is_some_and(|c| c > 1) {
        problems.push(format!(
            "/status.json connections = {:?} (only ours expected)",
            settled.connections
        ));
    }
    let (mut rss_pct, mut fd_delta) = (None, None);
    if let (Some(b), Some(a)) = (baseline.rss_kib, settled.rss_kib) {
        let p = percent(a as f64, b as f64);
        rss_pct = Some(p);
        if p > 5.0 {
            problems.push(format!("RSS {b} → {a} KiB (+{p:.1} %)"));
        }
    }
    if let (Some(b), Some(a)) = (baseline.non_memfd_fds(), settled.non_memfd_fds()) {
        let d = a as i64 - b as i64;
        fd_delta = Some(d);
        if d > 2 {
            problems.push(format!("descriptors other than memory files {b} → {a}"));
        }
    }
    if problems.is_empty() {
        say(args, "churn: PASS");
    } else {
        ok = false;
        say(args, format!("churn: FAIL: {}", problems.join("; ")));
    }
    let per_kind: serde_json::Map<String, Value> = KINDS
        .iter()
        .map(|k| {
            (
                k.name().to_string(),
                json!({"ok": tally.ok[k.index()], "failed": tally.failed[k.index()]}),
            )
        })
        .collect();
    println!(
        "{}",
        json!({
            "scenario": "churn",
            "pass": ok,
            "problems": problems,
            "cycles": done,
            "failed": failed,
            "seconds": secs,
            "cycles_per_s": rate,
            "per_kind": per_kind,
            "clean_closes_reset_by_server": tally.clean_reset,
            "errors": tally.first_errors,
            "window_full": full,
            "baseline": baseline.json(),
            "after": after.json(),
            "settled": settled.json(),
            "rss_change_pct": rss_pct,
            "fd_change": fd_delta,
        })
    );
    Ok(ok)
}

// ---------------------------------------------------------------------------------------
// abuse: the frame check

/// A frame as matroska-demuxer reads it.
struct OFrame {
    track: usize,
    ts_ms: i64,
    data: Vec<u8>,
}

/// Every frame of a Matroska byte string (stops quietly at a truncated end); the number
/// of tracks.
fn demux(bytes: &[u8]) -> Result<(usize, Vec<OFrame>), String> {
    let mut mkv = matroska_demuxer::MatroskaFile::open(Cursor::new(bytes))
        .map_err(|e| format!("matroska-demuxer: {e}"))?;
    let scale = mkv.info().timestamp_scale().get() as i64;
    let numbers: Vec<u64> = mkv
        .tracks()
        .iter()
        .map(|t| t.track_number().get())
        .collect();
    let mut frames = Vec::new();
    let mut f = matroska_demuxer::Frame::default();
    while let Ok(true) = mkv.next_frame(&mut f) {
        let Some(track) = numbers.iter().position(|n| *n == f.track) else {
            return Err(format!("a frame of unknown track {}", f.track));
        };
        frames.push(OFrame {
            track,
            ts_ms: f.timestamp as i64 * scale / 1_000_000,
            data: std::mem::take(&mut f.data),
        });
    }
    Ok((numbers.len(), frames))
}

/// Nominal frame duration (ms) per track: the mean timestamp step of the source.
fn nominal_frame_ms(tracks: usize, frames: &[OFrame]) -> Vec<f64> {
    (0..tracks)
        .map(|t| {
            let mut ts: Vec<i64> = frames
                .iter()
                .filter(|f| f.track == t)
                .map(|f| f.ts_ms)
                .collect();
            ts.sort_unstable();
            match (ts.first(), ts.last()) {
                (Some(a), Some(b)) if ts.len() > 1 => (b - a) as f64 / (ts.len() - 1) as f64,
                _ => 0.0,
            }
        })
        .collect()
}

/// What one good viewer received, per track.
#[derive(Clone, Debug, Default)]
struct TrackCheck {
    frames: usize,
    /// Frames of the source missing from the contiguous run (found by re-synchronising
    /// after a mismatch); `unmatched` frames not found in the source at all.
    lost: usize,
    unmatched: usize,
    /// Within the span where every frame must be present: frames expected from the span
    /// and the source's frame duration, and the largest timestamp gap (ms).
    span_ms: i64,
    expected: usize,
    counted: usize,
    max_gap_ms: i64,
}

fn check_track(src: &[&OFrame], got: &[&OFrame], frame_ms: f64) -> TrackCheck {
    let mut c = TrackCheck {
        frames: got.len(),
        ..TrackCheck::default()
    };
    if got.is_empty() || src.is_empty() {
        return c;
    }
    let n = src.len();
    // Where in the source a run of received frames starting at k begins.
    let locate = |k: usize| {
        (0..n).find(|&i| {
            (0..(got.len() - k).min(8)).all(|j| src[(i + j) % n].data == got[k + j].data)
        })
    };
    let mut pos = locate(0);
    if pos.is_none() {
        c.unmatched += 1;
    }
    for (k, g) in got.iter().enumerate().skip(usize::from(pos.is_none())) {
        match pos {
            Some(p) if src[p % n].data == g.data => pos = Some(p + 1),
            _ => match locate(k) {
                Some(i) => {
                    if let Some(p) = pos {
                        c.lost += (i + n - p % n) % n;
                    }
                    pos = Some(i + 1);
                }
                None => c.unmatched += 1,
            },
        }
    }
    // Timestamps: B-frames arrive out of presentation order, so only the span between
    // the largest of the first 8 and the smallest of the last 8 timestamps (in arrival
    // order) must be complete.
    let k = got.len().min(8);
    let lo = got[..k].iter().map(|f| f.ts_ms).max().unwrap_or(0);
    let hi = got[got.len() - k..]
        .iter()
        .map(|f| f.ts_ms)
        .min()
        .unwrap_or(0);
    let mut ts: Vec<i64> = got
        .iter()
        .map(|f| f.ts_ms)
        .filter(|t| (lo..=hi).contains(t))
        .collect();
    ts.sort_unstable();
    c.counted = ts.len();
    c.span_ms = hi - lo;
    c.expected = if hi > lo {
        (c.span_ms as f64 / frame_ms).round() as usize + 1
    } else {
        c.counted
    };
    c.max_gap_ms = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    c
}

struct Viewer {
    bytes: usize,
    first_byte_ms: Option<f64>,
    /// The longest wait between two reads that returned data, after the first.
    max_stall_ms: f64,
    error: Option<String>,
    body: Vec<u8>,
}

fn good_viewer(addr: SocketAddr, path: String, until: Instant) -> Viewer {
    let start = Instant::now();
    let mut v = Viewer {
        bytes: 0,
        first_byte_ms: None,
        max_stall_ms: 0.0,
        error: None,
        body: Vec::new(),
    };
    let run = |v: &mut Viewer| -> Result<(), String> {
        let mut s =
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        s.write_all(request_head(&path, "muxcast-stress-good").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let (status, first) = read_head(&mut s, 1).map_err(|e| format!("head: {e}"))?;
        v.first_byte_ms = Some(start.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            return Err(format!("status {status}"));
        }
        v.body = first;
        let mut last = Instant::now();
        let mut chunk = vec![0u8; 64 * 1024];
        while Instant::now() < until {
            match s.read(&mut chunk) {
                Ok(0) => return Err("server closed the stream".into()),
                Ok(n) => {
                    let now = Instant::now();
                    v.max_stall_ms = v
                        .max_stall_ms
                        .max(now.duration_since(last).as_secs_f64() * 1e3);
                    last = now;
                    v.body.extend_from_slice(&chunk[..n]);
                    if v.body.len() > 256 << 20 {
                        return Err("more than 256 MiB: not the expected stream".into());
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    v.max_stall_ms = v.max_stall_ms.max(last.elapsed().as_secs_f64() * 1e3);
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(())
    };
    if let Err(e) = run(&mut v) {
        v.error = Some(e);
    }
    v.bytes = v.body.len();
    v
}

// ---------------------------------------------------------------------------------------
// abuse: the attackers

struct Loris {
    socket: TcpStream,
    opened: Instant,
    sent: usize,
    closed_after: Option<f64>,
    answered: bool,
}

#[derive(Default)]
struct LorisReport {
    opened: usize,
    connect_failed: usize,
    closed: Vec<f64>,
    answered: usize,
    completed_head: usize,
    still_open: usize,
}

/// Opens `n` slow-loris connections and feeds each a request head one byte every
/// `interval`, until the server closes them or `limit` runs out.
fn slow_loris(
    addr: SocketAddr,
    path: String,
    n: usize,
    interval: Duration,
    limit: Duration,
) -> LorisReport {
    let start = Instant::now();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: stress\r\nUser-Agent: muxcast-stress-slow-loris\r\n\
         X-Padding: {}\r\n\r\n",
        "x".repeat(40)
    );
    let head = head.as_bytes();
    let mut report = LorisReport::default();
    let mut conns: Vec<Loris> = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nonblocking(true);
                let _ = s.set_nodelay(true);
                conns.push(Loris {
                    socket: s,
                    opened: Instant::now(),
                    sent: 0,
                    closed_after: None,
                    answered: false,
                });
            }
            Err(_) => report.connect_failed += 1,
        }
        if start.elapsed() > limit {
            break;
        }
    }
    report.opened = conns.len();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        let mut open = 0;
        for c in conns.iter_mut().filter(|c| c.closed_after.is_none()) {
            let now = Instant::now();
            // Did the server close (FIN, RST) or answer?
            let gone = loop {
                match c.socket.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => c.answered = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            if gone {
                c.closed_after = Some(now.duration_since(c.opened).as_secs_f64());
                continue;
            }
            let due =
                (now.duration_since(c.opened).as_secs_f64() / interval.as_secs_f64()) as usize + 1;
            if c.sent < head.len() && c.sent < due {
                match c.socket.write(&head[c.sent..c.sent + 1]) {
                    Ok(k) => c.sent += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        c.closed_after = Some(now.duration_since(c.opened).as_secs_f64());
                        continue;
                    }
                }
            }
            open += 1;
        }
        if open == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    for c in &conns {
        match c.closed_after {
            Some(t) => report.closed.push(t),
            None => report.still_open += 1,
        }
        report.answered += usize::from(c.answered);
        report.completed_head += usize::from(c.sent == head.len());
    }
    report
        .closed
        .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    report
}

/// Bytes waiting unread in the receive buffers of `sockets` (FIONREAD).
fn queued_bytes(sockets: &[TcpStream]) -> usize {
    sockets
        .iter()
        .map(|s| {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int for a socket we own.
            let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
            if r == 0 { n.max(0) as usize } else { 0 }
        })
        .sum()
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn abuse(args: &Args) -> Result<bool, String> {
    let source_path = args.source.as_deref().unwrap_or_default();
    let source = std::fs::read(source_path).map_err(|e| format!("{source_path}: {e}"))?;
    let (src_tracks, src_frames) = demux(&source)?;
    // Nominal frame duration per track: the mean timestamp step of the source.
    let frame_ms = nominal_frame_ms(src_tracks, &src_frames);
    let start = Instant::now();
    wait_live(args, Duration::from_secs(30))?;
    let baseline = sample(args, start);
    say(
        args,
        format!(
            "abuse: source {source_path}: {src_tracks} tracks, {} frames, {} fps; baseline: {}",
            src_frames.len(),
            frame_ms
                .iter()
                .map(|ms| format!("{:.2}", 1000.0 / ms))
                .collect::<Vec<_>>()
                .join(" / "),
            baseline.line()
        ),
    );

    // Good viewers first.
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(args.duration);
    let good: Vec<_> = (0..args.good)
        .map(|_| {
            let path = args.path.clone();
            let addr = args.addr;
            thread::spawn(move || good_viewer(addr, path, until))
        })
        .collect();
    // A sampler: /proc and /status.json every second while the attack runs.
    let stop = Arc::new(AtomicBool::new(false));
    let timeline = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let (stop, timeline) = (stop.clone(), timeline.clone());
        let a = Args {
            source: None,
            path: args.path.clone(),
            stream: args.stream.clone(),
            server_log: None,
            csv: None,
            ..*args
        };
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let s = sample(&a, t0);
                timeline.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    thread::sleep(Duration::from_secs(1).min(Duration::from_secs_f64(args.duration / 4.0)));

    // Then the attackers.
    let loris_limit = Duration::from_secs_f64(args.header_timeout * 3.0 + 15.0);
    let loris = {
        let (addr, path, n) = (args.addr, args.path.clone(), args.loris);
        let interval = Duration::from_secs_f64(args.loris_interval);
        thread::spawn(move || slow_loris(addr, path, n, interval, loris_limit))
    };
    let stalled_start = Instant::now();
    let mut stalled = Vec::with_capacity(args.stalled);
    let mut stalled_failed = 0usize;
    for _ in 0..args.stalled {
        let s = TcpStream::connect_timeout(&args.addr, IO_TIMEOUT).and_then(|mut s| {
            s.write_all(request_head(&args.path, "muxcast-stress-stalled").as_bytes())?;
            Ok(s)
        });
        match s {
            Ok(s) => stalled.push(s),
            Err(_) => stalled_failed += 1,
        }
        if stalled_start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    say(
        args,
        format!(
            "abuse: {} stalled readers in {:.2} s ({stalled_failed} failed); {} good viewers reading",
            stalled.len(),
            stalled_start.elapsed().as_secs_f64(),
            args.good
        ),
    );

    let viewers: Vec<Viewer> = good
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| Viewer {
                bytes: 0,
                first_byte_ms: None,
                max_stall_ms: 0.0,
                error: Some("viewer thread panicked".into()),
                body: Vec::new(),
            })
        })
        .collect();
    let during = sample(args, t0);
    say(
        args,
        format!(
            "abuse: good viewers done at {:.1} s; {}",
            t0.elapsed().as_secs_f64(),
            during.line()
        ),
    );

    // Check every good viewer's frames.
    let src_by_track: Vec<Vec<&OFrame>> = (0..src_tracks)
        .map(|t| src_frames.iter().filter(|f| f.track == t).collect())
        .collect();
    let mut viewer_errors = Vec::new();
    let mut totals = vec![TrackCheck::default(); src_tracks];
    let mut bad_viewers = 0usize;
    let mut total_bytes = 0usize;
    let mut max_stall: f64 = 0.0;
    let mut ttfb: Vec<f64> = Vec::new();
    for (i, v) in viewers.iter().enumerate() {
        total_bytes += v.bytes;
        max_stall = max_stall.max(v.max_stall_ms);
        ttfb.extend(v.first_byte_ms);
        let mut bad = false;
        if let Some(e) = &v.error {
            bad = true;
            if viewer_errors.len() < 5 {
                viewer_errors.push(format!("viewer {i}: {e}"));
            }
        }
        match demux(&v.body) {
            Ok((tracks, frames)) if tracks == src_tracks => {
                for t in 0..src_tracks {
                    let got: Vec<&OFrame> = frames.iter().filter(|f| f.track == t).collect();
                    let c = check_track(&src_by_track[t], &got, frame_ms[t]);
                    if c.frames == 0
                        || c.lost > 0
                        || c.unmatched > 0
                        || c.max_gap_ms as f64 >= HOLE * frame_ms[t]
                    {
                        bad = true;
                        if viewer_errors.len() < 5 {
                            viewer_errors.push(format!("viewer {i} track {t}: {c:?}"));
                        }
                    }
                    let tot = &mut totals[t];
                    tot.frames += c.frames;
                    tot.lost += c.lost;
                    tot.unmatched += c.unmatched;
                    tot.expected += c.expected;
                    tot.counted += c.counted;
                    tot.max_gap_ms = tot.max_gap_ms.max(c.max_gap_ms);
                    tot.span_ms = tot.span_ms.max(c.span_ms);
                }
            }
            Ok((tracks, _)) => {
                bad = true;
                viewer_errors.push(format!(
                    "viewer {i}: {tracks} tracks, source has {src_tracks}"
                ));
            }
            Err(e) => {
                bad = true;
                if viewer_errors.len() < 5 {
                    viewer_errors.push(format!("viewer {i}: {e}"));
                }
            }
        }
        bad_viewers += usize::from(bad);
    }
    drop(viewers);
    ttfb.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    say(
        args,
        format!(
            "abuse: good viewers: {}/{} got every frame; {:.1} MB; first byte p50 {:.0} ms, max {:.0} ms; longest wait between reads {max_stall:.0} ms",
            args.good - bad_viewers,
            args.good,
            total_bytes as f64 / 1e6,
            quantile(&ttfb, 0.5).unwrap_or(f64::NAN),
            quantile(&ttfb, 1.0).unwrap_or(f64::NAN),
        ),
    );
    for (t, c) in totals.iter().enumerate() {
        say(
            args,
            format!(
                "    track {t}: {} frames ({:.1}/s nominal); in the complete spans {} of {} expected; lost {}, not in source {}; largest timestamp gap {} ms",
                c.frames,
                1000.0 / frame_ms[t],
                c.counted,
                c.expected,
                c.lost,
                c.unmatched,
                c.max_gap_ms
            ),
        );
    }
    for e in &viewer_errors {
        say(args, format!("    e.g. {e}"));
    }

    // Slow-loris: closed by the server near --header-timeout?
    let lr = loris.join().unwrap_or_default();
    let ht = args.header_timeout;
    let late = lr.closed.iter().filter(|&&t| t > ht + 1.5).count();
    let early = lr.closed.iter().filter(|&&t| t < ht - 0.1).count();
    say(
        args,
        format!(
            "abuse: slow-loris: {} opened ({} connect failures), {} closed by the server after {:.2} / {:.2} / {:.2} s (min / p50 / max), {} still open, {} answered, {} sent a whole head",
            lr.opened,
            lr.connect_failed,
            lr.closed.len(),
            quantile(&lr.closed, 0.0).unwrap_or(f64::NAN),
            quantile(&lr.closed, 0.5).unwrap_or(f64::NAN),
            quantile(&lr.closed, 1.0).unwrap_or(f64::NAN),
            lr.still_open,
            lr.answered,
            lr.completed_head
        ),
    );

    // Stalled readers: wait (bounded) for the server's client timeout to close them.
    let wait_start = Instant::now();
    let mut stalled_gone_after = None;
    // Stalled readers pin kernel memory in the server's send buffers: stop waiting before
    // the machine reaches TCP memory pressure (tcp_mem[0]), which would hurt every other
    // TCP user on the machine.
    let pressure = tcp_mem_limits().map(|l| l[0]);
    let mut stopped_for_memory = false;
    while wait_start.elapsed() < Duration::from_secs_f64(args.stalled_wait) {
        let s = sample(args, t0);
        if s.clients == Some(0) {
            stalled_gone_after = Some(stalled_start.elapsed().as_secs_f64());
            break;
        }
        if let (Some(p), Some(m)) = (pressure, s.tcp_mem_pages)
            && m * 10 >= p * 9
        {
            stopped_for_memory = true;
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    let before_drop = sample(args, t0);
    say(
        args,
        match stalled_gone_after {
            Some(t) => format!(
                "abuse: stalled readers: all closed by the server {t:.1} s after they connected"
            ),
            None => format!(
                "abuse: stalled readers: {:?} clients still attached {:.1} s after they connected{}",
                before_drop.clients,
                stalled_start.elapsed().as_secs_f64(),
                if stopped_for_memory {
                    " (stopped waiting: machine TCP memory at 90 % of tcp_mem[0])"
                } else {
                    ""
                }
            ),
        },
    );
    let n_stalled = stalled.len();
    let stalled_queued = queued_bytes(&stalled);
    say(
        args,
        format!(
            "abuse: stalled readers hold {:.1} MB unread in their receive buffers; machine TCP memory {} MiB",
            stalled_queued as f64 / 1e6,
            before_drop.tcp_mem_pages.map_or(0, |p| p / 256)
        ),
    );
    if stalled_gone_after.is_none() && n_stalled > 0 {
        say(
            args,
            "abuse: WARN: the server never closed the stalled readers: they take nothing, but \
             its kernel send buffers still accept the stream, so --client-timeout never starts",
        );
    }
    drop(stalled);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    thread::sleep(Duration::from_secs_f64(args.settle));
    let settled = sample(args, t0);
    say(args, format!("abuse: settled: {}", settled.line()));
    let timeline: Vec<Value> = timeline
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(Sample::json)
        .collect();
    if !args.quiet {
        println!("abuse: timeline (t from the good viewers' start):");
        for s in timeline.iter().step_by(2) {
            println!(
                "    t={:>5} s  connections {:>5}  clients {:>5}  fds {:>5}  RSS {:>6} KiB  GOPs skipped {}  TCP mem {} MiB",
                s["t"],
                s["connections"],
                s["clients"],
                s["fds"],
                s["rss_kib"],
                s["gops_skipped"],
                s["tcp_mem_pages"].as_u64().map_or(0, |p| p / 256)
            );
        }
    }

    // Verdicts.
    let mut problems = Vec::new();
    if bad_viewers > 0 {
        problems.push(format!("{bad_viewers} good viewers lost frames or failed"));
    }
    if lr.opened < args.loris || lr.closed.len() < lr.opened {
        problems.push(format!(
            "slow-loris: {} of {} opened, {} closed by the server",
            lr.opened,
            args.loris,
            lr.closed.len()
        ));
    }
    if late > 0 || early > 0 {
        problems.push(format!(
            "slow-loris: {early} closed before and {late} well after --header-timeout {ht} s"
        ));
    }
    if lr.completed_head > 0 {
        problems.push(format!(
            "{} slow-loris heads completed (raise --loris-interval)",
            lr.completed_head
        ));
    }
    if n_stalled < args.stalled {
        problems.push(format!(
            "{n_stalled} of {} stalled readers connected",
            args.stalled
        ));
    }
    if settled.clients != Some(0) {
        problems.push(format!(
            "/status.json clients = {:?} at the end",
            settled.clients
        ));
    }
    if let (Some(b), Some(a)) = (baseline.non_memfd_fds(), settled.non_memfd_fds())
        && a > b + 2
    {
        problems.push(format!("descriptors other than memory files {b} → {a}"));
    }
    let ok = problems.is_empty();
    if ok {
        say(args, "abuse: PASS");
    } else {
        say(args, format!("abuse: FAIL: {}", problems.join("; ")));
    }
    let tracks: Vec<Value> = totals
        .iter()
        .enumerate()
        .map(|(t, c)| {
            json!({
                "nominal_fps": 1000.0 / frame_ms[t],
                "frames": c.frames,
                "expected_in_spans": c.expected,
                "counted_in_spans": c.counted,
                "lost": c.lost,
                "not_in_source": c.unmatched,
                "max_gap_ms": c.max_gap_ms,
            })
        })
        .collect();
    println!(
        "{}",
        json!({
            "scenario": "abuse",
            "pass": ok,
            "problems": problems,
            "good": {
                "viewers": args.good,
                "every_frame": args.good - bad_viewers,
                "bytes": total_bytes,
                "ttfb_ms_p50": quantile(&ttfb, 0.5),
                "ttfb_ms_max": quantile(&ttfb, 1.0),
                "max_wait_between_reads_ms": max_stall,
                "tracks": tracks,
                "errors": viewer_errors,
            },
            "loris": {
                "opened": lr.opened,
                "connect_failed": lr.connect_failed,
                "closed_by_server": lr.closed.len(),
                "closed_after_s_min": quantile(&lr.closed, 0.0),
                "closed_after_s_p50": quantile(&lr.closed, 0.5),
                "closed_after_s_max": quantile(&lr.closed, 1.0),
                "still_open": lr.still_open,
                "answered": lr.answered,
            },
            "stalled": {
                "opened": n_stalled,
                "unread_bytes_at_end": stalled_queued,
                "connect_failed": stalled_failed,
                "all_closed_by_server_after_s": stalled_gone_after,
                "stopped_waiting_for_tcp_memory": stopped_for_memory,
                "attached_at_end": before_drop.clients,
                "tcp_mem_mib_at_end": before_drop.tcp_mem_pages.map(|p| p / 256),
            },
            "baseline": baseline.json(),
            "after_good": during.json(),
            "settled": settled.json(),
            "timeline": timeline,
        })
    );
    Ok(ok)
}

// ---------------------------------------------------------------------------------------
// soak

/// A live-MKV viewer that gets nothing for this long has stalled (a frame comes every
/// 40 ms; the server's own --client-timeout is 30 s).
const SOAK_STALL: Duration = Duration::from_secs(10);
/// Read timeout of HLS/DASH requests: a blocking reload is answered within three target
/// durations (6 s here), a DASH segment being written within its duration.
const SOAK_HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of one live-MKV session kept for the frame check (60 s of this file is ~2 MB).
const SOAK_BODY_CAP: usize = 16 << 20;
/// Requests of one HLS/DASH session, sessions of one client thread: bounds besides time.
const SOAK_MAX_STEPS: usize = 100_000;
/// Largest HLS/DASH response body taken.
const SOAK_MAX_RESPONSE: usize = 32 << 20;

/// splitmix64: the clients' random choices, reproducible with --seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// How a session ends. Live MKV: `Clean` (FIN, then read to the server's close), `Rst`
/// (SO_LINGER 0), `Unread` (close with unread body bytes: the kernel sends RST). HLS:
/// `Clean`, `Rst`, or `Pending` (a blocking playlist request sent, then close).
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Clean,
    Rst,
    Unread,
    Pending,
}

impl End {
    fn index(self) -> usize {
        match self {
            End::Clean => 0,
            End::Rst => 1,
            End::Unread | End::Pending => 2,
        }
    }
}

#[derive(Default)]
struct SoakStats {
    connections: AtomicU64,
    mkv_sessions: AtomicU64,
    mkv_ends: [AtomicU64; 3],
    mkv_active: AtomicU64,
    mkv_bytes: AtomicU64,
    mkv_frames: [AtomicU64; 4],
    /// Sessions whose frames were checked against the source and matched.
    mkv_matched: AtomicU64,
    mkv_clean_reset: AtomicU64,
    hls_sessions: AtomicU64,
    hls_ends: [AtomicU64; 3],
    hls_active: AtomicU64,
    hls_playlists: AtomicU64,
    hls_blocking: AtomicU64,
    hls_blocking_max_ms: AtomicU64,
    hls_inits: AtomicU64,
    hls_parts: AtomicU64,
    hls_segments: AtomicU64,
    hls_samples: AtomicU64,
    hls_bytes: AtomicU64,
    dash_sessions: AtomicU64,
    dash_active: AtomicU64,
    dash_mpds: AtomicU64,
    dash_inits: AtomicU64,
    dash_segments: AtomicU64,
    dash_chunked: AtomicU64,
    dash_samples: AtomicU64,
    dash_bytes: AtomicU64,
    /// Keep-alive connections the server closed between two requests (retried once).
    keepalive_closed: AtomicU64,
    error_count: AtomicU64,
    /// "kind: what" → (count, first message).
    errors: Mutex<std::collections::BTreeMap<String, (u64, String)>>,
}

impl SoakStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn error(&self, kind: &str, what: &str, detail: String) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        let mut m = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(format!("{kind}: {what}")).or_insert((0, detail));
        e.0 += 1;
    }
}

struct SoakSource {
    by_track: Vec<Vec<OFrame>>,
    frame_ms: Vec<f64>,
}

struct SoakCtx {
    addr: SocketAddr,
    path: String,
    stream: String,
    deadline: Instant,
    watch_min: f64,
    watch_max: f64,
    source: Option<SoakSource>,
    stats: SoakStats,
}

type Fail = (&'static str, String);

impl SoakCtx {
    fn connect(&self) -> Result<TcpStream, Fail> {
        SoakStats::add(&self.stats.connections, 1);
        let s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
            .map_err(|e| ("connect", e.to_string()))?;
        s.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| ("connect", e.to_string()))?;
        Ok(s)
    }

    /// The end of a session that starts now and wants `rng`'s watch time; None when less
    /// than --watch-min is left before the deadline (the client then stops).
    fn session_end(&self, rng: &mut Rng) -> Option<Instant> {
        let now = Instant::now();
        if now + Duration::from_secs_f64(self.watch_min) > self.deadline {
            return None;
        }
        let watch = Duration::from_secs_f64(rng.range(self.watch_min, self.watch_max));
        Some((now + watch).min(self.deadline))
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// One client thread: sessions back to back until the deadline. A session that failed to
/// connect is followed by a pause of a second, not by a reconnect at once.
fn soak_client(ctx: Arc<SoakCtx>, kind: usize, id: usize, seed: u64, done: Arc<AtomicUsize>) {
    let mut rng = Rng(seed ^ (id as u64).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ kind as u64);
    // Spread the first connects over two seconds.
    thread::sleep(Duration::from_millis(rng.next() % 2000));
    for _ in 0..SOAK_MAX_STEPS {
        let Some(until) = ctx.session_end(&mut rng) else {
            break;
        };
        let r = rng.unit();
        let (name, result) = match kind {
            0 => {
                let end = if r < 0.5 {
                    End::Clean
                } else if r < 0.75 {
                    End::Rst
                } else {
                    End::Unread
                };
                ("mkv", mkv_session(&ctx, until, end))
            }
            1 => {
                let end = if r < 0.4 {
                    End::Clean
                } else if r < 0.7 {
                    End::Rst
                } else {
                    End::Pending
                };
                // One HLS client in five is a plain (not low-latency) player.
                ("hls", hls_session(&ctx, id, until, end, id % 5 == 4))
            }
            _ => ("dash", dash_session(&ctx, until)),
        };
        if let Err((what, detail)) = result {
            ctx.stats.error(name, what, detail);
            if what == "connect" {
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
    done.fetch_add(1, Ordering::Relaxed);
}

/// A live-MKV viewer: GET, read until `until` (reads every 250 ms, what the socket holds),
/// leave as `end` says, then demux the body and check it against the source.
fn mkv_session(ctx: &SoakCtx, until: Instant, end: End) -> Result<(), Fail> {
    let st = &ctx.stats;
    SoakStats::add(&st.mkv_sessions, 1);
    SoakStats::add(&st.mkv_ends[end.index()], 1);
    SoakStats::add(&st.mkv_active, 1);
    let mut body = Vec::new();
    let r = mkv_watch(ctx, until, end, &mut body);
    st.mkv_active.fetch_sub(1, Ordering::Relaxed);
    r?;
    let (tracks, frames) = demux(&body).map_err(|e| ("demux", e))?;
    let mut per_track = [0u64; 4];
    for f in &frames {
        per_track[f.track.min(3)] += 1;
    }
    for (c, n) in st.mkv_frames.iter().zip(per_track) {
        SoakStats::add(c, n);
    }
    if let Some(src) = &ctx.source {
        if tracks != src.by_track.len() {
            return Err((
                "tracks",
                format!("{tracks} tracks, the source has {}", src.by_track.len()),
            ));
        }
        for t in 0..tracks {
            let want: Vec<&OFrame> = src.by_track[t].iter().collect();
            let got: Vec<&OFrame> = frames.iter().filter(|f| f.track == t).collect();
            let c = check_track(&want, &got, src.frame_ms[t]);
            if c.frames == 0
                || c.lost > 0
                || c.unmatched > 0
                || c.max_gap_ms as f64 >= HOLE * src.frame_ms[t]
            {
                return Err(("frame check", format!("track {t}: {c:?}")));
            }
        }
        SoakStats::add(&st.mkv_matched, 1);
    } else if frames.is_empty() {
        return Err(("no frames", format!("{} bytes, no frame", body.len())));
    }
    Ok(())
}

fn mkv_watch(ctx: &SoakCtx, until: Instant, end: End, body: &mut Vec<u8>) -> Result<(), Fail> {
    let st = &ctx.stats;
    let mut s = ctx.connect()?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| ("socket", e.to_string()))?;
    s.write_all(request_head(&ctx.path, "muxcast-stress-soak").as_bytes())
        .map_err(|e| ("write", e.to_string()))?;
    let (status, first) = read_head(&mut s, 1).map_err(|e| ("head", e.to_string()))?;
    if status != 200 {
        return Err(("status", format!("status {status}")));
    }
    // ~40 kB/s covers this file; the Vec grows past it if needed.
    let secs = until
        .saturating_duration_since(Instant::now())
        .as_secs_f64();
    body.reserve(((secs + 2.0) * 40_000.0).min(SOAK_BODY_CAP as f64) as usize);
    let mut total = first.len() as u64;
    body.extend_from_slice(&first);
    let keep = |body: &mut Vec<u8>, data: &[u8]| {
        let room = SOAK_BODY_CAP.saturating_sub(body.len());
        body.extend_from_slice(&data[..data.len().min(room)]);
    };
    s.set_nonblocking(true)
        .map_err(|e| ("socket", e.to_string()))?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut last_data = Instant::now();
    let result = loop {
        let mut closed = None;
        for _ in 0..10_000 {
            match s.read(&mut chunk) {
                Ok(0) => {
                    closed = Some(("server closed", "EOF while watching".to_string()));
                    break;
                }
                Ok(n) => {
                    total += n as u64;
                    keep(body, &chunk[..n]);
                    last_data = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    closed = Some(("read", e.to_string()));
                    break;
                }
            }
        }
        if let Some(c) = closed {
            break Err(c);
        }
        let now = Instant::now();
        if now >= until {
            break Ok(());
        }
        if now.duration_since(last_data) > SOAK_STALL {
            break Err((
                "stall",
                format!(
                    "no data for {:.1} s",
                    now.duration_since(last_data).as_secs_f64()
                ),
            ));
        }
        thread::sleep(Duration::from_millis(250).min(until - now));
    };
    if result.is_ok() {
        match end {
            End::Clean => {
                // FIN, then read until the server closes its side.
                let close = (|| -> Result<(), Fail> {
                    s.set_nonblocking(false)
                        .map_err(|e| ("socket", e.to_string()))?;
                    s.shutdown(Shutdown::Write)
                        .map_err(|e| ("shutdown", e.to_string()))?;
                    let deadline = Instant::now() + IO_TIMEOUT;
                    loop {
                        match s.read(&mut chunk) {
                            Ok(0) => return Ok(()),
                            Ok(n) if Instant::now() < deadline => {
                                total += n as u64;
                                keep(body, &chunk[..n]);
                            }
                            Ok(_) => {
                                return Err((
                                    "close",
                                    "server kept sending after our FIN".to_string(),
                                ));
                            }
                            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                                SoakStats::add(&st.mkv_clean_reset, 1);
                                return Ok(());
                            }
                            Err(e) => {
                                return Err((
                                    "close",
                                    format!("server did not close after our FIN: {e}"),
                                ));
                            }
                        }
                    }
                })();
                SoakStats::add(&st.mkv_bytes, total);
                return close;
            }
            End::Rst => {
                let _ = set_linger_zero(&s);
            }
            // Let a few frames arrive unread, then close: the kernel answers with RST.
            End::Unread | End::Pending => thread::sleep(Duration::from_millis(100)),
        }
    }
    SoakStats::add(&st.mkv_bytes, total);
    result
}

/// A keep-alive HTTP/1.1 client connection for HLS and DASH requests.
struct Conn<'a> {
    ctx: &'a SoakCtx,
    s: Option<TcpStream>,
    buf: Vec<u8>,
    /// Requests made on the current connection.
    used: usize,
}

struct Resp {
    status: u16,
    body: Vec<u8>,
    chunked: bool,
}

impl<'a> Conn<'a> {
    fn new(ctx: &'a SoakCtx) -> Conn<'a> {
        Conn {
            ctx,
            s: None,
            buf: Vec::new(),
            used: 0,
        }
    }

    fn socket(&mut self) -> Result<&mut TcpStream, Fail> {
        if self.s.is_none() {
            let s = self.ctx.connect()?;
            s.set_read_timeout(Some(SOAK_HTTP_TIMEOUT))
                .map_err(|e| ("socket", e.to_string()))?;
            self.s = Some(s);
            self.buf.clear();
            self.used = 0;
        }
        Ok(self.s.as_mut().expect("connected above"))
    }

    /// Reads once more into the buffer; 0 at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let s = self
            .s
            .as_mut()
            .ok_or_else(|| io::Error::other("not connected"))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// GET `path`; a keep-alive connection the server closed before answering is opened
    /// again once.
    fn get(&mut self, path: &str) -> Result<Resp, Fail> {
        for attempt in 0..2 {
            let reused = self.s.is_some() && self.used > 0;
            match self.get_once(path) {
                Err(("keep-alive closed", _)) if reused && attempt == 0 => {
                    SoakStats::add(&self.ctx.stats.keepalive_closed, 1);
                    self.s = None;
                }
                Err(e) => {
                    self.s = None;
                    return Err(e);
                }
                Ok(r) => return Ok(r),
            }
        }
        Err(("keep-alive closed", path.to_string()))
    }

    /// GET `path`, which must answer 200.
    fn get_ok(&mut self, path: &str, what: &'static str) -> Result<Resp, Fail> {
        let r = self.get(path)?;
        if r.status != 200 {
            return Err((
                what,
                format!(
                    "{path}: status {} {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body[..r.body.len().min(80)])
                ),
            ));
        }
        Ok(r)
    }

    fn get_once(&mut self, path: &str) -> Result<Resp, Fail> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: stress\r\nUser-Agent: muxcast-stress-soak\r\n\r\n"
        );
        self.socket()?
            .write_all(req.as_bytes())
            .map_err(|e| ("write", e.to_string()))?;
        self.used += 1;
        // The head.
        let (status, head_len, length, chunked, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = false;
                    for h in resp.headers.iter() {
                        let v = String::from_utf8_lossy(h.value);
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = Some(v.trim().parse::<usize>().map_err(|_| {
                                ("response", format!("{path}: Content-Length {v:?}"))
                            })?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = v.to_ascii_lowercase().contains("chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = v.eq_ignore_ascii_case("close");
                        }
                    }
                    break (resp.code.unwrap_or(0), n, length, chunked, close);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(("response", format!("{path}: head: {e}"))),
            }
            if self.buf.len() > 64 * 1024 {
                return Err(("response", format!("{path}: head over 64 KiB")));
            }
            match self.fill() {
                Ok(0) if self.buf.is_empty() => {
                    return Err(("keep-alive closed", path.to_string()));
                }
                Ok(0) => return Err(("response", format!("{path}: EOF in the head"))),
                Ok(_) => {}
                Err(e) if self.buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(("keep-alive closed", path.to_string()));
                }
                Err(e) => return Err(("read", format!("{path}: head: {e}"))),
            }
        };
        self.buf.drain(..head_len);
        // The body.
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if self.buf.len() > 1024 {
                        return Err(("chunked", format!("{path}: chunk size line too long")));
                    }
                    self.fill_some(path)?;
                };
                let line = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let hex = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| ("chunked", format!("{path}: chunk size {line:?}")))?;
                if body.len() + size > SOAK_MAX_RESPONSE {
                    return Err((
                        "chunked",
                        format!("{path}: body over {SOAK_MAX_RESPONSE} B"),
                    ));
                }
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.fill_some(path)?;
                }
                if &self.buf[line_end + 2 + size..line_end + 4 + size] != b"\r\n" {
                    return Err(("chunked", format!("{path}: no CRLF after a chunk")));
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 4 + size);
                if size == 0 {
                    break body;
                }
            }
        } else if let Some(n) = length {
            if n > SOAK_MAX_RESPONSE {
                return Err(("response", format!("{path}: Content-Length {n}")));
            }
            while self.buf.len() < n {
                self.fill_some(path)?;
            }
            self.buf.drain(..n).collect()
        } else {
            return Err((
                "response",
                format!("{path}: neither Content-Length nor chunked"),
            ));
        };
        if close {
            self.s = None;
        }
        Ok(Resp {
            status,
            body,
            chunked,
        })
    }

    fn fill_some(&mut self, path: &str) -> Result<(), Fail> {
        match self.fill() {
            Ok(0) => Err(("response", format!("{path}: EOF in the body"))),
            Ok(_) => Ok(()),
            Err(e) => Err(("read", format!("{path}: body: {e}"))),
        }
    }

    /// Ends the connection: FIN, or RST with `rst`.
    fn close(&mut self, rst: bool) {
        if let Some(s) = self.s.take() {
            if rst {
                let _ = set_linger_zero(&s);
            } else {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// An init segment, decoded box by box by mp4-atom: ftyp and moov, nothing else.
fn check_init(bytes: &[u8]) -> Result<(), String> {
    use mp4_atom::Decode;
    let mut buf = bytes;
    let mut moov = false;
    while !buf.is_empty() {
        match mp4_atom::Any::decode(&mut buf).map_err(|e| format!("init: {e}"))? {
            mp4_atom::Any::Ftyp(_) => {}
            mp4_atom::Any::Moov(_) => moov = true,
            other => return Err(format!("init: unexpected box {other:?}")),
        }
    }
    if moov {
        Ok(())
    } else {
        Err("init: no moov".into())
    }
}

/// A CMAF part or segment, box by box: styp, prft, then moof + mdat pairs (moof and prft
/// decoded by mp4-atom); every mdat holds exactly the samples its moof's truns name, where
/// the first trun's data offset says. Returns the number of samples.
fn check_fragment(bytes: &[u8]) -> Result<usize, String> {
    use mp4_atom::Decode;
    let mut at = 0usize;
    let mut samples = 0usize;
    let mut moofs = 0usize;
    let mut pending: Option<(mp4_atom::Moof, usize)> = None;
    while at < bytes.len() {
        if bytes.len() - at < 8 {
            return Err(format!("{} stray bytes at {at}", bytes.len() - at));
        }
        let size =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        if size < 8 || size > bytes.len() - at {
            return Err(format!("box size {size} at {at} of {}", bytes.len()));
        }
        let kind = &bytes[at + 4..at + 8];
        let whole = &bytes[at..at + size];
        match kind {
            b"styp" => {}
            b"prft" => {
                mp4_atom::Prft::decode(&mut &whole[..]).map_err(|e| format!("prft: {e}"))?;
            }
            b"moof" => {
                if pending.is_some() {
                    return Err("two moofs without an mdat".into());
                }
                let m =
                    mp4_atom::Moof::decode(&mut &whole[..]).map_err(|e| format!("moof: {e}"))?;
                pending = Some((m, at));
                moofs += 1;
            }
            b"mdat" => {
                let (moof, moof_at) = pending.take().ok_or("an mdat without a moof")?;
                let mut bytes_named = 0usize;
                let mut sized = true;
                for traf in &moof.traf {
                    for trun in &traf.trun {
                        samples += trun.samples.len();
                        for e in &trun.samples {
                            match e.size.or(traf.tfhd.default_sample_size) {
                                Some(n) => bytes_named += n as usize,
                                None => sized = false,
                            }
                        }
                    }
                }
                if let Some(off) = moof
                    .traf
                    .first()
                    .and_then(|t| t.trun.first())
                    .and_then(|t| t.data_offset)
                    && moof_at + off as usize != at + 8
                {
                    return Err(format!(
                        "data offset {off} does not land after the mdat header"
                    ));
                }
                if sized && bytes_named != size - 8 {
                    return Err(format!(
                        "mdat of {} bytes, its moof names {bytes_named}",
                        size - 8
                    ));
                }
            }
            other => {
                return Err(format!(
                    "unexpected box {:?}",
                    String::from_utf8_lossy(other)
                ));
            }
        }
        at += size;
    }
    if pending.is_some() {
        return Err("a moof without its mdat".into());
    }
    if moofs == 0 {
        return Err("no moof".into());
    }
    Ok(samples)
}

/// What an HLS client needs from a media playlist. m3u8-rs parses it (and so checks it);
/// parts and the preload hint (which m3u8-rs 6 does not know) are read from their lines,
/// their media sequence number and index from the names (`part<MSN>.<K>.m4s`).
struct MediaView {
    map: Option<String>,
    /// (msn, uri) of every segment.
    segments: Vec<(u64, String)>,
    /// (msn, index, uri) of every part.
    parts: Vec<(u64, u64, String)>,
    hint: Option<(u64, u64)>,
}

fn part_id(uri: &str) -> Option<(u64, u64)> {
    let rest = uri.strip_prefix("part")?.strip_suffix(".m4s")?;
    let (m, k) = rest.split_once('.')?;
    Some((m.parse().ok()?, k.parse().ok()?))
}

fn media_view(body: &[u8]) -> Result<MediaView, Fail> {
    let media = match m3u8_rs::parse_playlist_res(body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => m,
        Ok(_) => return Err(("playlist", "not a media playlist".into())),
        Err(e) => return Err(("playlist", format!("m3u8-rs: {e}"))),
    };
    let map = media
        .segments
        .iter()
        .rev()
        .find_map(|s| s.map.as_ref().map(|m| m.uri.clone()));
    let segments = media
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| (media.media_sequence + i as u64, s.uri.clone()))
        .collect();
    let text = String::from_utf8_lossy(body);
    let uri_of = |l: &str| {
        let i = l.find("URI=\"")? + 5;
        let j = l[i..].find('"')?;
        Some(l[i..i + j].to_string())
    };
    let mut parts = Vec::new();
    let mut hint = None;
    for l in text.lines() {
        if l.starts_with("#EXT-X-PART:") {
            let uri = uri_of(l).ok_or(("playlist", format!("no URI: {l}")))?;
            let (m, k) = part_id(&uri).ok_or(("playlist", format!("part name {uri:?}")))?;
            parts.push((m, k, uri));
        } else if l.starts_with("#EXT-X-PRELOAD-HINT:") && l.contains("TYPE=PART") {
            let uri = uri_of(l).ok_or(("playlist", format!("no URI: {l}")))?;
            hint = Some(part_id(&uri).ok_or(("playlist", format!("hint name {uri:?}")))?);
        }
    }
    Ok(MediaView {
        map,
        segments,
        parts,
        hint,
    })
}

/// An HLS client: the multivariant playlist, one rendition (by `id`), its init segment
/// and latest segment; then, low-latency, a blocking reload for the hinted part and every
/// new part it lists, or, `plain`, a reload every second and every new segment.
fn hls_session(
    ctx: &SoakCtx,
    id: usize,
    until: Instant,
    end: End,
    plain: bool,
) -> Result<(), Fail> {
    let st = &ctx.stats;
    SoakStats::add(&st.hls_sessions, 1);
    SoakStats::add(&st.hls_ends[end.index()], 1);
    SoakStats::add(&st.hls_active, 1);
    let mut c = Conn::new(ctx);
    let r = hls_run(ctx, &mut c, id, until, end, plain);
    st.hls_active.fetch_sub(1, Ordering::Relaxed);
    match (&r, end) {
        (Err(_), _) | (_, End::Clean) => c.close(false),
        (_, End::Rst) => c.close(true),
        (_, _) => {}
    }
    r
}

fn hls_run(
    ctx: &SoakCtx,
    c: &mut Conn,
    id: usize,
    until: Instant,
    end: End,
    plain: bool,
) -> Result<(), Fail> {
    let st = &ctx.stats;
    let base = format!("/{}/", ctx.stream);
    let master = c.get_ok(&format!("{base}index.m3u8"), "multivariant playlist")?;
    SoakStats::add(&st.hls_playlists, 1);
    let m = match m3u8_rs::parse_playlist_res(&master.body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m,
        Ok(_) => return Err(("multivariant playlist", "a media playlist".into())),
        Err(e) => return Err(("multivariant playlist", format!("m3u8-rs: {e}"))),
    };
    let mut uris: Vec<String> = m.variants.iter().map(|v| v.uri.clone()).collect();
    uris.extend(m.alternatives.iter().filter_map(|a| a.uri.clone()));
    if uris.is_empty() {
        return Err(("multivariant playlist", "no rendition".into()));
    }
    let uri = &uris[id % uris.len()];
    let dir = format!("{base}{}", &uri[..uri.rfind('/').map_or(0, |i| i + 1)]);
    let playlist = format!("{base}{uri}");
    let mut view = media_view(&c.get_ok(&playlist, "playlist")?.body)?;
    SoakStats::add(&st.hls_playlists, 1);
    let map = view
        .map
        .clone()
        .ok_or(("playlist", "no EXT-X-MAP".to_string()))?;
    let init = c.get_ok(&format!("{dir}{map}"), "init")?;
    check_init(&init.body).map_err(|e| ("init", e))?;
    SoakStats::add(&st.hls_inits, 1);
    SoakStats::add(&st.hls_bytes, init.body.len() as u64);
    let fetch = |c: &mut Conn, uri: &str, what: &'static str| -> Result<(), Fail> {
        let r = c.get_ok(&format!("{dir}{uri}"), what)?;
        let n = check_fragment(&r.body).map_err(|e| (what, format!("{uri}: {e}")))?;
        SoakStats::add(&st.hls_samples, n as u64);
        SoakStats::add(&st.hls_bytes, r.body.len() as u64);
        Ok(())
    };
    // As a player starting up: the latest complete segment.
    let (mut last_seg, seg_uri) = view
        .segments
        .last()
        .cloned()
        .ok_or(("playlist", "no segment".to_string()))?;
    fetch(c, &seg_uri, "segment")?;
    SoakStats::add(&st.hls_segments, 1);
    let mut last_part = (last_seg, u64::MAX);
    for _ in 0..SOAK_MAX_STEPS {
        if Instant::now() >= until {
            break;
        }
        if plain {
            sleep_until((Instant::now() + Duration::from_secs(1)).min(until));
            view = media_view(&c.get_ok(&playlist, "playlist")?.body)?;
            SoakStats::add(&st.hls_playlists, 1);
            let from = last_seg;
            for (msn, uri) in view.segments.iter().filter(|(m, _)| *m > from) {
                fetch(c, uri, "segment")?;
                SoakStats::add(&st.hls_segments, 1);
                last_seg = *msn;
            }
            continue;
        }
        // Low latency: a blocking reload that returns once the hinted part exists.
        let (m, k) = view
            .hint
            .ok_or(("playlist", "no PRELOAD-HINT".to_string()))?;
        let t = Instant::now();
        let r = c.get_ok(
            &format!("{playlist}?_HLS_msn={m}&_HLS_part={k}"),
            "blocking reload",
        )?;
        let ms = t.elapsed().as_millis() as u64;
        st.hls_blocking_max_ms.fetch_max(ms, Ordering::Relaxed);
        SoakStats::add(&st.hls_blocking, 1);
        view = media_view(&r.body)?;
        if !view.parts.iter().any(|p| (p.0, p.1) == (m, k)) {
            return Err(("blocking reload", format!("answered without part {m}.{k}")));
        }
        let new: Vec<(u64, u64, String)> = view
            .parts
            .iter()
            .filter(|p| (p.0, p.1) > last_part)
            .cloned()
            .collect();
        for (pm, pk, uri) in new {
            fetch(c, &uri, "part")?;
            SoakStats::add(&st.hls_parts, 1);
            last_part = (pm, pk);
        }
    }
    if end == End::Pending {
        // Leave with a blocking request outstanding: the server holds a waiter for it.
        if let (Some((m, _)), Some(s)) = (view.hint, c.s.as_mut()) {
            let req = format!(
                "GET {playlist}?_HLS_msn={}&_HLS_part=0 HTTP/1.1\r\nHost: stress\r\n\r\n",
                m + 1
            );
            let _ = s.write_all(req.as_bytes());
            thread::sleep(Duration::from_millis(50));
        }
        c.close(false);
    }
    Ok(())
}

/// A DASH client: the MPD about once a second (dash-mpd-core), each representation's
/// init segment, and every segment of the timeline not fetched yet by `$Time$`, but the
/// last (listed ahead, held until it starts): so the one being written, chunked, too.
fn dash_session(ctx: &SoakCtx, until: Instant) -> Result<(), Fail> {
    let st = &ctx.stats;
    SoakStats::add(&st.dash_sessions, 1);
    SoakStats::add(&st.dash_active, 1);
    let mut c = Conn::new(ctx);
    let r = dash_run(ctx, &mut c, until);
    st.dash_active.fetch_sub(1, Ordering::Relaxed);
    c.close(false);
    r
}

fn dash_run(ctx: &SoakCtx, c: &mut Conn, until: Instant) -> Result<(), Fail> {
    let st = &ctx.stats;
    let base = format!("/{}/", ctx.stream);
    // (period id, representation id) → (init fetched, last segment time fetched)
    let mut reps: std::collections::HashMap<(String, String), Option<u64>> = Default::default();
    for _ in 0..SOAK_MAX_STEPS {
        let t0 = Instant::now();
        if t0 >= until {
            break;
        }
        let xml = c.get_ok(&format!("{base}manifest.mpd"), "mpd")?;
        SoakStats::add(&st.dash_mpds, 1);
        let text = String::from_utf8(xml.body).map_err(|_| ("mpd", "not UTF-8".to_string()))?;
        let mpd =
            dash_mpd_core::parse(&text).map_err(|e| ("mpd", format!("dash-mpd-core: {e}")))?;
        let period = mpd.periods.last().ok_or(("mpd", "no Period".to_string()))?;
        let pid = period.id.clone().unwrap_or_default();
        for a in &period.adaptations {
            for r in &a.representations {
                let rid = r.id.clone().unwrap_or_default();
                let tpl = r
                    .SegmentTemplate
                    .as_ref()
                    .or(a.SegmentTemplate.as_ref())
                    .ok_or(("mpd", format!("{rid}: no SegmentTemplate")))?;
                let (Some(init), Some(media), Some(tl)) =
                    (&tpl.initialization, &tpl.media, &tpl.SegmentTimeline)
                else {
                    return Err((
                        "mpd",
                        format!("{rid}: template without init/media/timeline"),
                    ));
                };
                let mut times = Vec::new();
                let mut t = 0u64;
                for s in &tl.segments {
                    t = s.t.unwrap_or(t);
                    for _ in 0..=s.r.unwrap_or(0).clamp(0, 10_000) {
                        times.push(t);
                        t += s.d;
                    }
                }
                if times.len() < 3 {
                    continue;
                }
                let key = (pid.clone(), rid.clone());
                let last = match reps.get(&key) {
                    Some(l) => *l,
                    None => {
                        let r = c.get_ok(
                            &format!("{base}{}", init.replace("$RepresentationID$", &rid)),
                            "init",
                        )?;
                        check_init(&r.body).map_err(|e| ("init", e))?;
                        SoakStats::add(&st.dash_inits, 1);
                        SoakStats::add(&st.dash_bytes, r.body.len() as u64);
                        // Start at the latest complete segment.
                        let l = times[times.len() - 3].checked_sub(1);
                        reps.insert(key.clone(), l);
                        l
                    }
                };
                let mut last = last;
                for &t in &times[..times.len() - 1] {
                    if last.is_some_and(|l| t <= l) {
                        continue;
                    }
                    let path = format!(
                        "{base}{}",
                        media
                            .replace("$RepresentationID$", &rid)
                            .replace("$Time$", &t.to_string())
                    );
                    let r = c.get_ok(&path, "segment")?;
                    let n =
                        check_fragment(&r.body).map_err(|e| ("segment", format!("{path}: {e}")))?;
                    SoakStats::add(&st.dash_segments, 1);
                    SoakStats::add(&st.dash_chunked, u64::from(r.chunked));
                    SoakStats::add(&st.dash_samples, n as u64);
                    SoakStats::add(&st.dash_bytes, r.body.len() as u64);
                    last = Some(t);
                }
                reps.insert(key, last);
            }
        }
        sleep_until((t0 + Duration::from_secs(1)).min(until));
    }
    Ok(())
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// Least squares y = a + b·x: (b, standard error of b).
fn lsq_slope(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    let sse: f64 = points.iter().map(|p| (p.1 - a - b * p.0).powi(2)).sum();
    Some((b, (sse / (n - 2.0) / sxx).sqrt()))
}

/// WARN and ERROR lines of the server's log (env_logger's `[LEVEL target] msg`, or
/// `--log-format json`; a panic counts as an error), deduplicated with digits replaced by
/// `#`: (level, count, first line), most frequent first.
fn log_problems(path: &str) -> Result<Vec<(&'static str, u64, String)>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let text = String::from_utf8_lossy(&text);
    let mut seen: std::collections::BTreeMap<(&'static str, String), (u64, String)> =
        Default::default();
    for line in text.lines() {
        let level = if line.starts_with("[ERROR")
            || line.contains("\"level\":\"ERROR\"")
            || line.contains("panicked at")
        {
            "ERROR"
        } else if line.starts_with("[WARN") || line.contains("\"level\":\"WARN\"") {
            "WARN"
        } else {
            continue;
        };
        let key: String = line
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        let e = seen.entry((level, key)).or_insert((0, line.to_string()));
        e.0 += 1;
    }
    let mut v: Vec<_> = seen
        .into_iter()
        .map(|((level, _), (n, first))| (level, n, first))
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    Ok(v)
}

/// One figure of the server at the four points the soak report compares (before the
/// clients, end of the warm-up, end of the run, after they left): `a → b → c → d`, with
/// `?` where it could not be read.
fn four_points<T: ToString>(points: [&Sample; 4], figure: impl Fn(&Sample) -> Option<T>) -> String {
    points
        .map(|s| figure(s).map_or("?".into(), |v| v.to_string()))
        .join(" → ")
}

/// Client-side counters at one sample.
#[derive(Clone, Default)]
struct SoakRow {
    server: Sample,
    cpu_pct: Option<f64>,
    connections: u64,
    sessions: u64,
    active: u64,
    errors: u64,
}

fn soak(args: &Args) -> Result<bool, String> {
    let pid = args
        .pid
        .ok_or("soak needs --pid (the server's process id)")?;
    let source = match &args.source {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| format!("{p}: {e}"))?;
            let (tracks, frames) = demux(&bytes)?;
            let frame_ms = nominal_frame_ms(tracks, &frames);
            let mut by_track: Vec<Vec<OFrame>> = (0..tracks).map(|_| Vec::new()).collect();
            for f in frames {
                let t = f.track;
                by_track[t].push(f);
            }
            Some(SoakSource { by_track, frame_ms })
        }
        None => None,
    };
    let n_hls = ((args.viewers as f64 * args.hls_share).round() as usize).min(args.viewers);
    let n_dash = args.dash.min(args.viewers - n_hls);
    let n_mkv = args.viewers - n_hls - n_dash;

    let wait_start = Instant::now();
    wait_live(args, Duration::from_secs(30))?;
    say(
        args,
        "soak: stream live; waiting for the GOP window to fill",
    );
    let (full, gops) = wait_window_full(args, Duration::from_secs_f64(args.window_wait));
    let baseline = sample(args, wait_start);
    say(
        args,
        format!(
            "soak: window {} at {gops} GOPs after {:.0} s; baseline before any client: {}, RssAnon {} KiB",
            if full { "full" } else { "still growing" },
            wait_start.elapsed().as_secs_f64(),
            baseline.line(),
            baseline.rss_anon_kib.map_or("?".into(), |v| v.to_string()),
        ),
    );
    say(
        args,
        format!(
            "soak: {} clients for {:.0} s: {n_mkv} live MKV, {n_hls} HLS ({} low-latency), {n_dash} DASH; sessions of {}–{} s; a sample every {} s, slopes after {} s",
            args.viewers,
            args.duration,
            (0..n_hls).filter(|i| i % 5 != 4).count(),
            args.watch_min,
            args.watch_max,
            args.sample_every,
            args.warmup
        ),
    );

    let t0 = Instant::now();
    let ctx = Arc::new(SoakCtx {
        addr: args.addr,
        path: args.path.clone(),
        stream: args.stream.clone(),
        deadline: t0 + Duration::from_secs_f64(args.duration),
        watch_min: args.watch_min,
        watch_max: args.watch_max,
        source,
        stats: SoakStats::default(),
    });
    let done = Arc::new(AtomicUsize::new(0));
    let mut spawned = 0usize;
    for (kind, n, stack) in [
        (0, n_mkv, 256 << 10),
        (1, n_hls, 1 << 20),
        (2, n_dash, 1 << 20),
    ] {
        for id in 0..n {
            let (ctx, done) = (ctx.clone(), done.clone());
            let seed = args.seed;
            thread::Builder::new()
                .stack_size(stack)
                .spawn(move || soak_client(ctx, kind, id, seed, done))
                .map_err(|e| format!("spawning client thread: {e}"))?;
            spawned += 1;
        }
    }
    let own_pid = std::process::id();
    let (srv_cpu0, own_cpu0) = (cpu_seconds(pid), cpu_seconds(own_pid));

    // Sampling: every --sample-every seconds, from 0 to --duration.
    let mut csv = match &args.csv {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?),
        None => None,
    };
    let csv_head = "t_s,rss_kib,rss_anon_kib,rss_file_kib,rss_shmem_kib,memfd_kib,memfds,held_kib,fds,status_clients,status_connections,window_bytes,gops_held,gops_skipped,server_cpu_pct,client_connections,client_sessions,client_active,client_errors";
    if let Some(f) = csv.as_mut() {
        let _ = writeln!(f, "{csv_head}");
    }
    say(
        args,
        format!(
            "{:>6} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>6} {:>9} {:>6} {:>8} {:>9} {:>6} {:>6}",
            "t s",
            "RSS KiB",
            "anon KiB",
            "memfdKiB",
            "held KiB",
            "fds",
            "clients",
            "conns",
            "window B",
            "cpu %",
            "connects",
            "sessions",
            "active",
            "errors"
        ),
    );
    let st = &ctx.stats;
    let mut rows: Vec<SoakRow> = Vec::new();
    let every = Duration::from_secs_f64(args.sample_every);
    // t = 0, every, 2·every, ... while the clients run (not at the deadline, when they
    // are leaving).
    let n_samples = ((args.duration / args.sample_every).ceil() as usize).max(1);
    let mut last_cpu = (Instant::now(), cpu_seconds(pid));
    for k in 0..n_samples {
        sleep_until(t0 + every * k as u32);
        let server = sample(args, t0);
        let now_cpu = (Instant::now(), cpu_seconds(pid));
        let cpu_pct = match (last_cpu.1, now_cpu.1) {
            (Some(a), Some(b)) if k > 0 => {
                Some((b - a) / now_cpu.0.duration_since(last_cpu.0).as_secs_f64() * 100.0)
            }
            _ => None,
        };
        last_cpu = now_cpu;
        let row = SoakRow {
            server,
            cpu_pct,
            connections: SoakStats::get(&st.connections),
            sessions: SoakStats::get(&st.mkv_sessions)
                + SoakStats::get(&st.hls_sessions)
                + SoakStats::get(&st.dash_sessions),
            active: SoakStats::get(&st.mkv_active)
                + SoakStats::get(&st.hls_active)
                + SoakStats::get(&st.dash_active),
            errors: SoakStats::get(&st.error_count),
        };
        let o = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let s = &row.server;
        say(
            args,
            format!(
                "{:>6.0} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>6} {:>9} {:>6} {:>8} {:>9} {:>6} {:>6}",
                s.t,
                o(s.rss_kib),
                o(s.rss_anon_kib),
                o(s.memfd_kib),
                o(s.held_kib()),
                s.fds.map_or("?".into(), |v| v.to_string()),
                o(s.clients),
                o(s.connections),
                o(s.window_bytes),
                row.cpu_pct.map_or("".into(), |v| format!("{v:.1}")),
                row.connections,
                row.sessions,
                row.active,
                row.errors
            ),
        );
        if let Some(f) = csv.as_mut() {
            let e = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
            let _ = writeln!(
                f,
                "{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                s.t,
                e(s.rss_kib),
                e(s.rss_anon_kib),
                e(s.rss_file_kib),
                e(s.rss_shmem_kib),
                e(s.memfd_kib),
                s.memfds.map_or(String::new(), |v| v.to_string()),
                e(s.held_kib()),
                s.fds.map_or(String::new(), |v| v.to_string()),
                e(s.clients),
                e(s.connections),
                e(s.window_bytes),
                e(s.gops_held),
                e(s.gops_skipped),
                row.cpu_pct.map_or(String::new(), |v| format!("{v:.2}")),
                row.connections,
                row.sessions,
                row.active,
                row.errors
            );
            let _ = f.flush();
        }
        rows.push(row);
    }
    let (srv_cpu1, own_cpu1) = (cpu_seconds(pid), cpu_seconds(own_pid));
    let run_secs = t0.elapsed().as_secs_f64();

    // The clients stop at the deadline; a request in flight ends within its timeout.
    let join_limit = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < spawned && Instant::now() < join_limit {
        thread::sleep(Duration::from_millis(100));
    }
    let stragglers = spawned - done.load(Ordering::Relaxed);
    let settle_limit = Instant::now() + Duration::from_secs(20);
    let mut settled = sample(args, t0);
    while settled.clients != Some(0) && Instant::now() < settle_limit {
        thread::sleep(Duration::from_millis(500));
        settled = sample(args, t0);
    }
    thread::sleep(Duration::from_secs_f64(args.settle));
    settled = sample(args, t0);

    // Slopes over the samples after the warm-up, per minute.
    let after: Vec<&SoakRow> = rows.iter().filter(|r| r.server.t >= args.warmup).collect();
    let series = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        after
            .iter()
            .filter_map(|r| f(&r.server).map(|y| (r.server.t / 60.0, y)))
            .collect()
    };
    let rss = series(&|s| s.rss_kib.map(|v| v as f64));
    let anon = series(&|s| s.rss_anon_kib.map(|v| v as f64));
    let fds = series(&|s| s.fds.map(|v| v as f64));
    let window = series(&|s| s.window_bytes.map(|v| v as f64 / 1024.0));
    let rss_slope = lsq_slope(&rss);
    let anon_slope = lsq_slope(&anon);
    let fd_slope = lsq_slope(&fds);
    let window_slope = lsq_slope(&window);
    // RSS less the GOP window's bytes: what the window's own ups and downs do not explain.
    let rss_less_window = series(&|s| Some(s.rss_kib? as f64 - s.window_bytes? as f64 / 1024.0));
    let rss_less_window_slope = lsq_slope(&rss_less_window);
    let held = series(&|s| s.held_kib().map(|v| v as f64));
    let held_slope = lsq_slope(&held);
    let memfd_slope = lsq_slope(&series(&|s| s.memfd_kib.map(|v| v as f64)));
    let mean_rss = if rss.is_empty() {
        0.0
    } else {
        rss.iter().map(|p| p.1).sum::<f64>() / rss.len() as f64
    };
    let threshold = mean_rss * args.max_slope_pct / 100.0 / 10.0;
    let g = SoakStats::get;
    let connections = g(&st.connections);
    let conn_per_min = connections as f64 / (run_secs / 60.0);
    let last = rows.last().map(|r| r.server.clone()).unwrap_or_default();
    let warm = after.first().map(|r| r.server.clone()).unwrap_or_default();
    let o = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    let slope_txt = |s: Option<(f64, f64)>, unit: &str| {
        s.map_or("?".into(), |(b, e)| format!("{b:+.2} ± {e:.2} {unit}/min"))
    };

    say(
        args,
        format!(
            "soak: {} samples above{}",
            rows.len(),
            args.csv
                .as_ref()
                .map_or(String::new(), |p| format!("; CSV: {p}"))
        ),
    );
    say(
        args,
        format!(
            "soak: VmRSS {} KiB before the clients, {} KiB at t={:.0} s (end of warm-up), {} KiB at the end (t={:.0} s), {} KiB after they left",
            o(baseline.rss_kib),
            o(warm.rss_kib),
            warm.t,
            o(last.rss_kib),
            last.t,
            o(settled.rss_kib)
        ),
    );
    let points = [&baseline, &warm, &last, &settled];
    say(
        args,
        format!(
            "soak: same four points: RssAnon {} KiB; memfd {} KiB; held {} KiB; descriptors {}",
            four_points(points, |s| s.rss_anon_kib),
            four_points(points, |s| s.memfd_kib),
            four_points(points, Sample::held_kib),
            four_points(points, |s| s.fds),
        ),
    );
    say(
        args,
        format!(
            "soak: slopes over the {} samples after {:.0} s (least squares ± standard error): VmRSS {}, RssAnon {}, memfd {}, held (anon + file + memfd) {}, descriptors {}, GOP window {}, VmRSS less the window {}",
            rss.len(),
            args.warmup,
            slope_txt(rss_slope, "KiB"),
            slope_txt(anon_slope, "KiB"),
            slope_txt(memfd_slope, "KiB"),
            slope_txt(held_slope, "KiB"),
            slope_txt(fd_slope, "fds"),
            slope_txt(window_slope, "KiB"),
            slope_txt(rss_less_window_slope, "KiB"),
        ),
    );
    say(
        args,
        format!(
            "soak: threshold {threshold:.1} KiB/min = {} % of the mean RSS ({mean_rss:.0} KiB) per 10 minutes; at {conn_per_min:.0} connections/min that is {:.0} bytes leaked per connection",
            args.max_slope_pct,
            threshold * 1024.0 / conn_per_min.max(1e-9)
        ),
    );
    let cpu = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1} %", (b - a) / run_secs * 100.0),
        _ => "?".into(),
    };
    say(
        args,
        format!(
            "soak: CPU over the run (of one core): server {}, clients {}",
            cpu(srv_cpu0, srv_cpu1),
            cpu(own_cpu0, own_cpu1)
        ),
    );
    let mkv_frames: Vec<u64> = st.mkv_frames.iter().map(g).collect();
    say(
        args,
        format!(
            "soak: {connections} connections made ({conn_per_min:.0}/min); live MKV: {} sessions (clean {}, RST {}, unread {}), {:.1} MB, frames per track {:?}, {} sessions checked frame by frame against the source, {} clean closes answered with RST",
            g(&st.mkv_sessions),
            g(&st.mkv_ends[0]),
            g(&st.mkv_ends[1]),
            g(&st.mkv_ends[2]),
            g(&st.mkv_bytes) as f64 / 1e6,
            &mkv_frames[..ctx.source.as_ref().map_or(2, |s| s.by_track.len()).min(4)],
            g(&st.mkv_matched),
            g(&st.mkv_clean_reset),
        ),
    );
    say(
        args,
        format!(
            "soak: HLS: {} sessions (clean {}, RST {}, with a blocking request pending {}), {} playlists of which {} blocking reloads (slowest {} ms), {} inits, {} segments, {} parts, {} samples, {:.1} MB",
            g(&st.hls_sessions),
            g(&st.hls_ends[0]),
            g(&st.hls_ends[1]),
            g(&st.hls_ends[2]),
            g(&st.hls_playlists) + g(&st.hls_blocking),
            g(&st.hls_blocking),
            g(&st.hls_blocking_max_ms),
            g(&st.hls_inits),
            g(&st.hls_segments),
            g(&st.hls_parts),
            g(&st.hls_samples),
            g(&st.hls_bytes) as f64 / 1e6,
        ),
    );
    say(
        args,
        format!(
            "soak: DASH: {} sessions, {} MPDs, {} inits, {} segments ({} chunked), {} samples, {:.1} MB; keep-alive connections closed by the server between requests: {}",
            g(&st.dash_sessions),
            g(&st.dash_mpds),
            g(&st.dash_inits),
            g(&st.dash_segments),
            g(&st.dash_chunked),
            g(&st.dash_samples),
            g(&st.dash_bytes) as f64 / 1e6,
            g(&st.keepalive_closed),
        ),
    );
    let errors = std::mem::take(&mut *st.errors.lock().unwrap_or_else(|e| e.into_inner()));
    let n_errors = g(&st.error_count);
    say(args, format!("soak: client errors: {n_errors}"));
    for (k, (n, first)) in &errors {
        say(args, format!("    {n:>6} × {k}   e.g. {first}"));
    }
    let log = match &args.server_log {
        Some(p) => Some(log_problems(p)?),
        None => None,
    };
    let (mut n_warn, mut n_error) = (0u64, 0u64);
    if let Some(lines) = &log {
        n_warn = lines.iter().filter(|l| l.0 == "WARN").map(|l| l.1).sum();
        n_error = lines.iter().filter(|l| l.0 == "ERROR").map(|l| l.1).sum();
        say(
            args,
            format!(
                "soak: server log: {n_error} ERROR lines, {n_warn} WARN lines ({} distinct with digits ignored)",
                lines.len()
            ),
        );
        for (level, n, line) in lines {
            say(args, format!("    {n:>6} × {level}: {line}"));
        }
    }

    // Verdict.
    say(
        args,
        format!(
            "soak: rule: PASS when the slopes of VmRSS and of held memory after the warm-up are under {:.1} KiB/min ({} % of the mean VmRSS per 10 minutes), the descriptor slope under 1 per minute, the server log has no ERROR line (WARN lines are listed, not failed), no client saw an error, and /status.json shows 0 clients once they left",
            threshold, args.max_slope_pct
        ),
    );
    let mut problems = Vec::new();
    match rss_slope {
        Some((b, _)) if b < threshold => {}
        Some((b, e)) => problems.push(format!(
            "RSS slope {b:+.2} ± {e:.2} KiB/min ≥ {threshold:.1}"
        )),
        None => problems.push("no RSS samples after the warm-up".into()),
    }
    match held_slope {
        Some((b, e)) if b >= threshold => problems.push(format!(
            "held-memory slope {b:+.2} ± {e:.2} KiB/min ≥ {threshold:.1}"
        )),
        _ => {}
    }
    match fd_slope {
        Some((b, _)) if b < 1.0 => {}
        Some((b, _)) => problems.push(format!("descriptor slope {b:+.2}/min")),
        None => problems.push("no descriptor samples after the warm-up".into()),
    }
    if log.is_none() {
        problems.push("no --server-log to check".into());
    }
    if n_error > 0 {
        problems.push(format!("{n_error} ERROR lines in the server log"));
    }
    if n_errors > 0 {
        problems.push(format!("{n_errors} client errors"));
    }
    if settled.clients != Some(0) {
        problems.push(format!(
            "/status.json clients = {:?} at the end",
            settled.clients
        ));
    }
    if stragglers > 0 {
        problems.push(format!(
            "{stragglers} client threads still running 60 s after the end"
        ));
    }
    let ok = problems.is_empty();
    if ok {
        say(args, "soak: PASS");
    } else {
        say(args, format!("soak: FAIL: {}", problems.join("; ")));
    }
    let slope_json = |s: Option<(f64, f64)>| s.map(|(b, e)| json!({"per_min": b, "stderr": e}));
    println!(
        "{}",
        json!({
            "scenario": "soak",
            "pass": ok,
            "problems": problems,
            "seconds": run_secs,
            "clients": {"mkv": n_mkv, "hls": n_hls, "dash": n_dash},
            "window_full": full,
            "warmup_s": args.warmup,
            "rss_slope_kib": slope_json(rss_slope),
            "rss_anon_slope_kib": slope_json(anon_slope),
            "fd_slope": slope_json(fd_slope),
            "window_slope_kib": slope_json(window_slope),
            "rss_less_window_slope_kib": slope_json(rss_less_window_slope),
            "held_slope_kib": slope_json(held_slope),
            "memfd_slope_kib": slope_json(memfd_slope),
            "threshold_kib_per_min": threshold,
            "connections": connections,
            "mkv": {
                "sessions": g(&st.mkv_sessions),
                "ends_clean_rst_unread": [g(&st.mkv_ends[0]), g(&st.mkv_ends[1]), g(&st.mkv_ends[2])],
                "bytes": g(&st.mkv_bytes),
                "frames_per_track": mkv_frames,
                "sessions_matched_source": g(&st.mkv_matched),
                "clean_closes_reset_by_server": g(&st.mkv_clean_reset),
            },
            "hls": {
                "sessions": g(&st.hls_sessions),
                "ends_clean_rst_pending": [g(&st.hls_ends[0]), g(&st.hls_ends[1]), g(&st.hls_ends[2])],
                "playlists": g(&st.hls_playlists),
                "blocking_reloads": g(&st.hls_blocking),
                "blocking_max_ms": g(&st.hls_blocking_max_ms),
                "inits": g(&st.hls_inits),
                "segments": g(&st.hls_segments),
                "parts": g(&st.hls_parts),
                "samples": g(&st.hls_samples),
                "bytes": g(&st.hls_bytes),
            },
            "dash": {
                "sessions": g(&st.dash_sessions),
                "mpds": g(&st.dash_mpds),
                "inits": g(&st.dash_inits),
                "segments": g(&st.dash_segments),
                "chunked": g(&st.dash_chunked),
                "samples": g(&st.dash_samples),
                "bytes": g(&st.dash_bytes),
            },
            "keepalive_closed_by_server": g(&st.keepalive_closed),
            "client_errors": n_errors,
            "client_error_kinds": errors.iter().map(|(k, (n, e))| json!({"kind": k, "count": n, "first": e})).collect::<Vec<_>>(),
            "server_log_error_lines": n_error,
            "server_log_warn_lines": n_warn,
            "server_log": log.as_ref().map(|l| l.iter().map(|(lv, n, line)| json!({"level": lv, "count": n, "first": line})).collect::<Vec<_>>()),
            "server_cpu_s": match (srv_cpu0, srv_cpu1) { (Some(a), Some(b)) => Some(b - a), _ => None },
            "client_cpu_s": match (own_cpu0, own_cpu1) { (Some(a), Some(b)) => Some(b - a), _ => None },
            "baseline": baseline.json(),
            "end": last.json(),
            "settled": settled.json(),
            "samples": rows.iter().map(|r| r.server.json()).collect::<Vec<_>>(),
        })
    );
    Ok(ok)
}
