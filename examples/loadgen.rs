//! Load generator for live HTTP streams: opens N connections to one URL in a burst, sends a
//! GET on each, reads and discards everything for D seconds, then prints per-run figures:
//! time to first byte, the share served within a second, and how many clients kept up with
//! the stream's real-time rate.
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/live/live.webm \
//!     --clients 1000 --duration 30 --rate-bps 4000000
//! ```
//!
//! One mio poll per thread (`--threads`, default 1); clients are dealt round-robin to the
//! threads. After the response head, bytes are discarded in the kernel (`recv` with
//! `MSG_TRUNC`, Linux) so that the generator costs as little CPU as possible: it shares the
//! machine with the server it measures. `--copy` reads into a buffer instead.
//!
//! One process holds one descriptor per client: past the descriptor limit (`ulimit -n`),
//! `--procs P` splits the clients over P child processes that start together and report
//! back to this one, which prints the figures for all of them.
//!
//! A client "keeps up" when the body bytes it received between `--warmup` seconds (default
//! 3) and the end of the run are at least 95 % of `rate × (duration − warmup)`.
//! The last line of output is one JSON object with every figure.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use serde_json::json;

const HELP: &str = "\
loadgen: N simultaneous HTTP GETs of a live stream, read and discarded for D seconds.

USAGE:
    loadgen --url http://HOST:PORT/PATH [OPTIONS]

OPTIONS:
    --url URL          http:// URL to GET (required; IPv4/IPv6 literal or resolvable host)
    --clients N        connections opened in one burst [default: 100]
    --duration SECS    length of the run, from the first connect [default: 30]
    --warmup SECS      start of the keep-up window [default: 3]
    --rate-bps BPS     nominal stream rate in bits/s (needed for the keep-up verdict)
    --media FILE       with --media-seconds: nominal rate = size(FILE) * 8 / SECONDS
    --media-seconds S  duration of --media in seconds
    --threads T        event-loop threads [default: 1]
    --max-pending K    paced connects: at most K clients (per thread) between connect and
                       response head; the next connects when one gets its head or fails
                       [default: no limit, all connect in one burst]
    --window-after-connects
                       start the keep-up window --warmup seconds after the last client
                       got its response head, not after the start of the run (for paced
                       connects to a server that accepts slowly)
    --procs P          split the clients over P processes (one descriptor per client
                       each; for more clients than `ulimit -n` allows) [default: 1]
    --copy             read bodies into a buffer instead of discarding them in the kernel
    --quiet            print only the JSON line
    -h, --help         this text
";

const MAX_CLIENTS: usize = 200_000;
const MAX_DURATION: f64 = 3600.0;
const MAX_HEAD: usize = 16 * 1024;
const MSG_TRUNC: i32 = 0x20;

unsafe extern "C" {
    fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
}

struct Args {
    host: String,
    addr: SocketAddr,
    path: String,
    clients: usize,
    duration: f64,
    warmup: f64,
    rate_bps: Option<f64>,
    threads: usize,
    max_pending: Option<usize>,
    window_after_connects: bool,
    procs: usize,
    /// Set in the children of --procs: print raw records, start at this Unix time (ns).
    child: bool,
    start_at_unix_ns: Option<u128>,
    copy: bool,
    quiet: bool,
}

fn parse_url(url: &str) -> Result<(String, SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !hostport.ends_with(']')
    {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    Ok((hostport.to_string(), addr, path.to_string()))
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut url = None;
    let mut clients = 100usize;
    let mut duration = 30.0f64;
    let mut warmup = 3.0f64;
    let mut rate_bps = None;
    let mut media = None;
    let mut media_seconds = None;
    let mut threads = 1usize;
    let mut max_pending = None;
    let mut window_after_connects = false;
    let mut procs = 1usize;
    let mut child = false;
    let mut start_at_unix_ns = None;
    let mut copy = false;
    let mut quiet = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |name: &str, v: String| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{name}: {v:?} is not a non-negative number"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "--url" => url = Some(value("--url")?),
            "--clients" | "-n" => clients = num("--clients", value("--clients")?)? as usize,
            "--duration" | "-d" => duration = num("--duration", value("--duration")?)?,
            "--warmup" => warmup = num("--warmup", value("--warmup")?)?,
            "--rate-bps" => rate_bps = Some(num("--rate-bps", value("--rate-bps")?)?),
            "--media" => media = Some(value("--media")?),
            "--media-seconds" => {
                media_seconds = Some(num("--media-seconds", value("--media-seconds")?)?)
            }
            "--threads" => threads = num("--threads", value("--threads")?)? as usize,
            "--max-pending" => {
                let k = num("--max-pending", value("--max-pending")?)? as usize;
                if k == 0 {
                    return Err("--max-pending must be at least 1".into());
                }
                max_pending = Some(k);
            }
            "--window-after-connects" => window_after_connects = true,
            "--procs" => procs = num("--procs", value("--procs")?)? as usize,
            "--child" => child = true,
            "--start-at-unix-ns" => {
                let v = value("--start-at-unix-ns")?;
                start_at_unix_ns = Some(
                    v.parse::<u128>()
                        .map_err(|_| format!("--start-at-unix-ns: {v:?}"))?,
                );
            }
            "--copy" => copy = true,
            "--quiet" | "-q" => quiet = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let url = url.ok_or("--url is required (see --help)")?;
    let (host, addr, path) = parse_url(&url)?;
    if !(1..=MAX_CLIENTS).contains(&clients) {
        return Err(format!("--clients must be between 1 and {MAX_CLIENTS}"));
    }
    if !(duration > 0.0 && duration <= MAX_DURATION) {
        return Err(format!("--duration must be in (0, {MAX_DURATION}] seconds"));
    }
    if warmup >= duration {
        return Err("--warmup must be shorter than --duration".into());
    }
    if !(1..=64).contains(&threads) {
        return Err("--threads must be between 1 and 64".into());
    }
    if !(1..=64).contains(&procs) {
        return Err("--procs must be between 1 and 64".into());
    }
    if rate_bps.is_none()
        && let (Some(file), Some(secs)) = (&media, media_seconds)
    {
        let len = std::fs::metadata(file)
            .map_err(|e| format!("{file}: {e}"))?
            .len();
        if secs <= 0.0 {
            return Err("--media-seconds must be positive".into());
        }
        rate_bps = Some(len as f64 * 8.0 / secs);
    }
    Ok(Some(Args {
        host,
        addr,
        path,
        clients,
        duration,
        warmup,
        rate_bps,
        threads: threads.min(clients),
        max_pending,
        window_after_connects,
        procs: procs.min(clients),
        child,
        start_at_unix_ns,
        copy,
        quiet,
    }))
}

#[derive(PartialEq)]
enum State {
    NotStarted,
    Connecting,
    Sending(usize),
    Head,
    Body,
    Done,
}

struct Client {
    sock: Option<TcpStream>,
    state: State,
    connect_start: Instant,
    /// When this client connected, from the start of the run.
    start_offset: Duration,
    head: Vec<u8>,
    first_byte: Option<Duration>,
    first_body: Option<Duration>,
    status: Option<u16>,
    body_bytes: u64,
    bytes_at_warmup: Option<u64>,
    /// Length of the keep-up window this client was measured over, in seconds.
    window_s: f64,
    /// Why this client is not (or no longer) receiving, if that happened before the end.
    error: Option<String>,
    ended_early: bool,
}

/// What is kept of a client once the run is over (and what a child process reports).
#[derive(Serialize, Deserialize)]
struct Record {
    /// When it connected, from the start of the run, in seconds.
    start_offset: f64,
    /// Time to first byte and to first body byte, from its connect.
    first_byte: Option<f64>,
    first_body: Option<f64>,
    status: Option<u16>,
    body_bytes: u64,
    /// Body bytes received in its keep-up window, and the window's length in seconds.
    window_bytes: u64,
    window_s: f64,
    ended_early: bool,
    error: Option<String>,
}

impl Record {
    fn of(c: &Client) -> Record {
        Record {
            start_offset: c.start_offset.as_secs_f64(),
            first_byte: c.first_byte.map(|d| d.as_secs_f64()),
            first_body: c.first_body.map(|d| d.as_secs_f64()),
            status: c.status,
            body_bytes: c.body_bytes,
            window_bytes: c.body_bytes - c.bytes_at_warmup.unwrap_or(c.body_bytes),
            window_s: c.window_s,
            ended_early: c.ended_early,
            error: c.error.clone(),
        }
    }
}

/// What one thread (or child process) hands back: its clients and bytes per second of
/// the run, and (from a child) its CPU seconds.
#[derive(Serialize, Deserialize)]
struct Outcome {
    records: Vec<Record>,
    per_second: Vec<u64>,
    cpu: Option<f64>,
}

fn run_thread(
    args: Arc<Args>,
    count: usize,
    barrier: Arc<Barrier>,
    t0: Arc<std::sync::OnceLock<Instant>>,
) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: muxcast-loadgen\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        args.path, args.host
    )
    .into_bytes();
    let mut buf = vec![0u8; 256 * 1024];
    let mut per_second = vec![0u64; args.duration.ceil() as usize + 1];
    let mut clients: Vec<Client> = Vec::with_capacity(count);

    barrier.wait();
    let start = *t0.get_or_init(Instant::now);
    let end = start + Duration::from_secs_f64(args.duration);
    let mut warm = start + Duration::from_secs_f64(args.warmup);
    // With --window-after-connects the window starts `warmup` after this thread's last
    // client got its response head (or failed); until then it is not known.
    let mut warm_known = !args.window_after_connects;
    for _ in 0..count {
        clients.push(Client {
            sock: None,
            state: State::NotStarted,
            connect_start: start,
            start_offset: Duration::ZERO,
            head: Vec::new(),
            first_byte: None,
            first_body: None,
            status: None,
            body_bytes: 0,
            bytes_at_warmup: None,
            window_s: 0.0,
            error: None,
            ended_early: false,
        });
    }
    // Clients between connect and response head; with --max-pending, the next client
    // connects only when one of these has its head (or failed).
    let limit = args.max_pending.unwrap_or(usize::MAX);
    let mut next = 0usize;
    let mut pending = 0usize;
    let launch = |clients: &mut Vec<Client>, poll: &Poll, next: &mut usize, pending: &mut usize| {
        while *next < clients.len() && *pending < limit {
            let c = &mut clients[*next];
            c.connect_start = Instant::now();
            c.start_offset = c.connect_start - start;
            match TcpStream::connect(args.addr) {
                Ok(mut s) => match poll.registry().register(
                    &mut s,
                    Token(*next),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => {
                        c.sock = Some(s);
                        c.state = State::Connecting;
                        *pending += 1;
                    }
                    Err(e) => {
                        c.error = Some(format!("register: {e}"));
                        c.state = State::Done;
                    }
                },
                Err(e) => {
                    c.error = Some(format!("connect: {e}"));
                    c.state = State::Done;
                }
            }
            *next += 1;
        }
    };
    launch(&mut clients, &poll, &mut next, &mut pending);

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !warm_known && next == clients.len() && pending == 0 {
            warm = now.max(start) + Duration::from_secs_f64(args.warmup);
            warm_known = true;
        }
        if warm_known && now >= warm && clients.first().is_some_and(|c| c.bytes_at_warmup.is_none())
        {
            for c in clients.iter_mut() {
                c.bytes_at_warmup = Some(c.body_bytes);
            }
        }
        let deadline = if clients.first().is_some_and(|c| c.bytes_at_warmup.is_none()) {
            if warm_known { warm.min(end) } else { end }
        } else {
            end
        };
        let timeout = deadline.saturating_duration_since(now) + Duration::from_millis(1);
        match poll.poll(&mut events, Some(timeout.min(Duration::from_millis(250)))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = clients.get_mut(i) else {
                continue;
            };
            let was_pending =
                matches!(c.state, State::Connecting | State::Sending(_) | State::Head);
            drive(c, &request, &mut buf, args.copy, start, &mut per_second);
            if was_pending && matches!(c.state, State::Body | State::Done) {
                pending -= 1;
            }
            if c.state == State::Done
                && let Some(mut s) = c.sock.take()
            {
                let _ = poll.registry().deregister(&mut s);
            }
        }
        if next < clients.len() && pending < limit {
            launch(&mut clients, &poll, &mut next, &mut pending);
        }
    }
    // A client whose window never started (the run ended first) has no window: it
    // cannot have kept up.
    let window_start = if warm_known && warm < end {
        (warm - start).as_secs_f64()
    } else {
        args.duration
    };
    for c in clients.iter_mut() {
        if c.bytes_at_warmup.is_none() {
            c.bytes_at_warmup = Some(c.body_bytes);
        }
        c.window_s = args.duration - window_start;
        c.sock = None;
    }
    Ok(Outcome {
        records: clients.iter().map(Record::of).collect(),
        per_second,
        cpu: None,
    })
}

/// Moves one client as far as its socket allows; sets `Done` on any end.
fn drive(
    c: &mut Client,
    request: &[u8],
    buf: &mut [u8],
    copy: bool,
    start: Instant,
    per_second: &mut [u64],
) {
    let Some(sock) = c.sock.as_mut() else { return };
    if c.state == State::Connecting {
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                c.error = Some(format!("connect: {e}"));
                c.state = State::Done;
                return;
            }
            Ok(None) => {}
        }
        match sock.peer_addr() {
            Ok(_) => c.state = State::Sending(0),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => {
                c.error = Some(format!("connect: {e}"));
                c.state = State::Done;
                return;
            }
        }
    }
    if let State::Sending(mut off) = c.state {
        while off < request.len() {
            match sock.write(&request[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.state = State::Sending(off);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.error = Some(format!("send: {e}"));
                    c.state = State::Done;
                    return;
                }
            }
        }
        c.state = State::Head;
    }
    loop {
        let n = if c.state == State::Body && !copy {
            use std::os::fd::AsRawFd;
            // SAFETY: recv with MSG_TRUNC on a TCP socket discards up to `len` bytes in the
            // kernel and never writes to `buf`; `buf` is valid for `len` bytes anyway.
            let r = unsafe { recv(sock.as_raw_fd(), buf.as_mut_ptr(), buf.len(), MSG_TRUNC) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        } else if c.state == State::Head {
            // Read the head in small steps so no body byte is needed to find its end.
            let room = (MAX_HEAD - c.head.len()).min(4096);
            sock.read(&mut buf[..room])
        } else {
            sock.read(buf)
        };
        match n {
            Ok(0) => {
                if c.error.is_none() {
                    c.error = Some(if c.state == State::Body {
                        "closed by server".into()
                    } else {
                        "closed before the response head".into()
                    });
                }
                c.ended_early = true;
                c.state = State::Done;
                return;
            }
            Ok(n) => {
                let now = Instant::now();
                if c.first_byte.is_none() {
                    c.first_byte = Some(now - c.connect_start);
                }
                let sec = (now - start).as_secs() as usize;
                if c.state == State::Head {
                    c.head.extend_from_slice(&buf[..n]);
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut resp = httparse::Response::new(&mut headers);
                    match resp.parse(&c.head) {
                        Ok(httparse::Status::Complete(len)) => {
                            let code = resp.code.unwrap_or(0);
                            c.status = Some(code);
                            if code != 200 {
                                c.error = Some(format!("HTTP {code}"));
                                c.state = State::Done;
                                return;
                            }
                            let body = (c.head.len() - len) as u64;
                            c.head = Vec::new();
                            c.state = State::Body;
                            if body > 0 {
                                c.first_body = Some(now - c.connect_start);
                                c.body_bytes += body;
                                if let Some(s) = per_second.get_mut(sec) {
                                    *s += body;
                                }
                            }
                        }
                        Ok(httparse::Status::Partial) if c.head.len() < MAX_HEAD => {}
                        Ok(httparse::Status::Partial) => {
                            c.error = Some("response head too long".into());
                            c.state = State::Done;
                            return;
                        }
                        Err(e) => {
                            c.error = Some(format!("bad response head: {e}"));
                            c.state = State::Done;
                            return;
                        }
                    }
                } else {
                    if c.first_body.is_none() {
                        c.first_body = Some(now - c.connect_start);
                    }
                    c.body_bytes += n as u64;
                    if let Some(s) = per_second.get_mut(sec) {
                        *s += n as u64;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                c.error = Some(format!("recv: {e}"));
                c.ended_early = c.state == State::Body;
                c.state = State::Done;
                return;
            }
        }
    }
}

/// Nearest-rank percentile of sorted values; `None` stands for "never" and sorts last.
fn pct(sorted: &[Option<f64>], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn sort_opt(v: &mut [Option<f64>]) {
    v.sort_by(|a, b| match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(s) => format!("{:.1} ms", s * 1e3),
        None => "never".into(),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => Arc::new(a),
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = if args.procs > 1 {
        run_children(&args)
    } else {
        run_threads(&args)
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.child {
        match serde_json::to_string(&outcome) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("loadgen: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        report(&args, &outcome.records, &outcome.per_second, outcome.cpu);
    }
    ExitCode::SUCCESS
}

/// This process's clients on `args.threads` event loops.
fn run_threads(args: &Arc<Args>) -> Result<Outcome, String> {
    let cpu_start = process_cpu_seconds();
    if let Some(at) = args.start_at_unix_ns {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_nanos();
        if at > now {
            thread::sleep(Duration::from_nanos((at - now).min(10_000_000_000) as u64));
        }
    }
    let barrier = Arc::new(Barrier::new(args.threads));
    let t0 = Arc::new(std::sync::OnceLock::new());
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let count = args.clients / args.threads + usize::from(t < args.clients % args.threads);
        let (a, b, t0) = (args.clone(), barrier.clone(), t0.clone());
        let h = thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || run_thread(a, count, b, t0))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push(h);
    }
    let mut records = Vec::with_capacity(args.clients);
    let mut per_second = vec![0u64; args.duration.ceil() as usize + 1];
    for h in handles {
        match h.join() {
            Ok(Ok(o)) => {
                records.extend(o.records);
                for (a, b) in per_second.iter_mut().zip(o.per_second) {
                    *a += b;
                }
            }
            Ok(Err(e)) => return Err(format!("event loop failed: {e}")),
            Err(_) => return Err("a thread panicked".into()),
        }
    }
    let cpu = process_cpu_seconds().zip(cpu_start).map(|(b, a)| b - a);
    Ok(Outcome {
        records,
        per_second,
        cpu,
    })
}

/// Runs `args.procs` copies of this program, each with its share of the clients, all
/// starting at the same instant, and merges what they report.
fn run_children(args: &Args) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let own: Vec<String> = std::env::args().skip(1).collect();
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos()
        + 300_000_000
        + 20_000_000 * args.procs as u128;
    let mut children = Vec::new();
    for p in 0..args.procs {
        let count = args.clients / args.procs + usize::from(p < args.clients % args.procs);
        // Later options win: the child's share and role override the parent's.
        let child = Command::new(&exe)
            .args(&own)
            .args(["--procs", "1", "--child", "--clients", &count.to_string()])
            .args(["--start-at-unix-ns", &start_at.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a child: {e}"))?;
        children.push(child);
    }
    let mut merged = Outcome {
        records: Vec::with_capacity(args.clients),
        per_second: vec![0u64; args.duration.ceil() as usize + 1],
        cpu: Some(0.0),
    };
    let mut failure = None;
    for child in children {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("child: {e}"))?;
        let line = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Outcome>(line.trim()) {
            Ok(o) if out.status.success() => {
                merged.records.extend(o.records);
                for (a, b) in merged.per_second.iter_mut().zip(o.per_second) {
                    *a += b;
                }
                merged.cpu = merged.cpu.zip(o.cpu).map(|(a, b)| a + b);
            }
            Ok(_) | Err(_) => failure = Some(format!("a child failed ({})", out.status)),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(merged),
    }
}

/// This process's user+system CPU seconds, from /proc (Linux); None elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted after the command name's closing paren.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn report(args: &Args, clients: &[Record], per_second: &[u64], cpu: Option<f64>) {
    let n = clients.len();
    let connected = clients.iter().filter(|c| c.status == Some(200)).count();
    let failed = n - connected;
    let ended_early = clients
        .iter()
        .filter(|c| c.ended_early && c.status == Some(200))
        .count();
    let mut ttfb: Vec<Option<f64>> = clients.iter().map(|c| c.first_byte).collect();
    let mut ttfbody: Vec<Option<f64>> = clients.iter().map(|c| c.first_body).collect();
    sort_opt(&mut ttfb);
    sort_opt(&mut ttfbody);
    let within_1s = clients
        .iter()
        .filter(|c| c.first_byte.is_some_and(|d| d <= 1.0))
        .count();
    let body_within_1s = clients
        .iter()
        .filter(|c| c.first_body.is_some_and(|d| d <= 1.0))
        .count();
    let total: u64 = clients.iter().map(|c| c.body_bytes).sum();
    // When the last client got its first byte, from the start of the run.
    let served = clients.iter().filter(|c| c.first_byte.is_some()).count();
    let last_first_byte = clients
        .iter()
        .filter_map(|c| c.first_byte.map(|d| c.start_offset + d))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let last_connect = clients.iter().map(|c| c.start_offset).fold(0.0, f64::max);
    // The latest window start over the threads and processes (they agree unless
    // --window-after-connects).
    let window_start = args.duration
        - clients
            .iter()
            .map(|c| c.window_s)
            .fold(f64::INFINITY, f64::min);
    let mut rates: Vec<f64> = clients
        .iter()
        .map(|c| {
            if c.window_s > 0.0 {
                c.window_bytes as f64 * 8.0 / c.window_s
            } else {
                0.0
            }
        })
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    let rate_at = |p: f64| {
        let rank = ((p / 100.0) * rates.len() as f64).ceil().max(1.0) as usize;
        rates[rank.min(rates.len()) - 1]
    };
    let (r_min, r_p5, r_med) = (rates[0], rate_at(5.0), rate_at(50.0));
    let keeping_up = args
        .rate_bps
        .map(|r| rates.iter().filter(|&&x| x >= 0.95 * r).count());
    let mut errors: Vec<(String, usize)> = Vec::new();
    for c in clients {
        if let Some(e) = &c.error {
            match errors.iter_mut().find(|(k, _)| k == e) {
                Some((_, n)) => *n += 1,
                None => errors.push((e.clone(), 1)),
            }
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    // Aggregate rate over the steady window, from the per-second buckets.
    let w0 = window_start.ceil() as usize;
    let w1 = args.duration.floor() as usize;
    let steady: u64 = per_second.get(w0..w1).map(|s| s.iter().sum()).unwrap_or(0);
    let steady_bps = if w1 > w0 {
        steady as f64 * 8.0 / (w1 - w0) as f64
    } else {
        0.0
    };

    if !args.quiet {
        println!(
            "loadgen: {} clients, {:.0} s, GET http://{}{}",
            n, args.duration, args.addr, args.path
        );
        println!(
            "  connected (HTTP 200): {connected}   failed: {failed}   ended early: {ended_early}"
        );
        for (e, k) in errors.iter().take(5) {
            println!("    {k} × {e}");
        }
        println!(
            "  time to first byte:      median {}  p95 {}  max {}   within 1 s: {}/{} ({:.1} %)",
            ms(pct(&ttfb, 50.0)),
            ms(pct(&ttfb, 95.0)),
            ms(pct(&ttfb, 100.0)),
            within_1s,
            n,
            100.0 * within_1s as f64 / n as f64
        );
        println!(
            "  {served}/{n} got a first byte; the last at {} after the run started (last connect at {:.1} ms)",
            ms(last_first_byte),
            last_connect * 1e3
        );
        println!(
            "  time to first body byte: median {}  p95 {}  max {}   within 1 s: {}/{}",
            ms(pct(&ttfbody, 50.0)),
            ms(pct(&ttfbody, 95.0)),
            ms(pct(&ttfbody, 100.0)),
            body_within_1s,
            n
        );
        println!(
            "  received: {:.3} GB in total; {:.2} Gbit/s aggregate over [{}, {}] s",
            total as f64 / 1e9,
            steady_bps / 1e9,
            w0,
            w1
        );
        let nominal = args
            .rate_bps
            .map(|r| format!("{:.3} Mbit/s", r / 1e6))
            .unwrap_or("unknown".into());
        let ratio = |x: f64| {
            args.rate_bps
                .map(|r| format!(" ({:.1} %)", 100.0 * x / r))
                .unwrap_or_default()
        };
        println!(
            "  per-client rate over [{:.1}, {}] s: median {:.3}{}  p5 {:.3}{}  min {:.3}{} Mbit/s; nominal {}",
            window_start,
            args.duration,
            r_med / 1e6,
            ratio(r_med),
            r_p5 / 1e6,
            ratio(r_p5),
            r_min / 1e6,
            ratio(r_min),
            nominal
        );
        match keeping_up {
            Some(k) => println!("  clients keeping up (≥ 95 % of real time): {k}/{n}"),
            None => println!("  clients keeping up: unknown (give --rate-bps)"),
        }
        if let Some(cpu) = cpu {
            println!(
                "  loadgen CPU: {cpu:.2} s ({} process(es) × {} thread(s))",
                args.procs, args.threads
            );
        }
        let secs: Vec<String> = per_second
            .iter()
            .take(args.duration.ceil() as usize)
            .map(|b| format!("{:.0}", *b as f64 * 8.0 / 1e6))
            .collect();
        println!("  Mbit/s per second of the run: {}", secs.join(" "));
    }
    let j = json!({
        "clients": n,
        "connected": connected,
        "failed": failed,
        "ended_early": ended_early,
        "errors": errors.iter().map(|(e, k)| json!({"error": e, "count": k})).collect::<Vec<_>>(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "window_start_s": window_start,
        "ttfb_s": {"median": pct(&ttfb, 50.0), "p95": pct(&ttfb, 95.0), "max": pct(&ttfb, 100.0)},
        "ttfb_body_s": {"median": pct(&ttfbody, 50.0), "p95": pct(&ttfbody, 95.0), "max": pct(&ttfbody, 100.0)},
        "first_byte_within_1s": within_1s as f64 / n as f64,
        "served": served,
        "last_first_byte_s": last_first_byte,
        "last_connect_s": last_connect,
        "max_pending": args.max_pending,
        "first_body_byte_within_1s": body_within_1s as f64 / n as f64,
        "bytes": total,
        "steady_aggregate_bps": steady_bps,
        "nominal_bps": args.rate_bps,
        "client_rate_bps": {"median": r_med, "p5": r_p5, "min": r_min},
        "keeping_up": keeping_up,
        "loadgen_cpu_s": cpu,
        "threads": args.threads,
        "procs": args.procs,
    });
    println!("{j}");
}
