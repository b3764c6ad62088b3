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
//! Every loop is bounded in count and in time. The process exits 1 when a check fails.
//! The last line of output is one JSON object with every figure.

use std::io::{self, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HELP: &str = "\
stress: abuse and soak tests against a running muxcast.

USAGE:
    stress churn --addr HOST:PORT [OPTIONS]
    stress abuse --addr HOST:PORT --source FILE [OPTIONS]

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
";

const MAX_CYCLES: usize = 1_000_000;
const MAX_CONNS: usize = 10_000;
const MAX_SECS: f64 = 600.0;
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
}

fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| e.to_string();
    let command = match parser.next().map_err(err)? {
        Some(Value(v)) if v == "churn" => Command::Churn,
        Some(Value(v)) if v == "abuse" => Command::Abuse,
        Some(Short('h')) | Some(Long("help")) | None => return Ok(None),
        Some(other) => return Err(format!("expected churn or abuse, got {other:?}")),
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
    };
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
            Long("duration") => a.duration = secs(&mut parser, "--duration")?,
            Long("header-timeout") => a.header_timeout = secs(&mut parser, "--header-timeout")?,
            Long("loris-interval") => {
                a.loris_interval = secs(&mut parser, "--loris-interval")?.max(0.01);
            }
            Long("stalled-wait") => a.stalled_wait = secs(&mut parser, "--stalled-wait")?,
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
    fn json(&self) -> Value {
        json!({
            "t": (self.t * 10.0).round() / 10.0,
            "rss_kib": self.rss_kib,
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
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
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
    if let (Some(b), Some(a)) = (baseline.fds, settled.fds) {
        let d = a as i64 - b as i64;
        fd_delta = Some(d);
        if d > 2 {
            problems.push(format!("descriptors {b} → {a}"));
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
    let frame_ms: Vec<f64> = (0..src_tracks)
        .map(|t| {
            let mut ts: Vec<i64> = src_frames
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
        .collect();
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
    if let (Some(b), Some(a)) = (baseline.fds, settled.fds)
        && a > b + 2
    {
        problems.push(format!("descriptors {b} → {a}"));
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
