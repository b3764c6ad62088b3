//! Reader threads: one per stream. Each reads its input, demuxes it, paces it when it is a
//! file, and hands tracks and frames to its [`Publisher`]. Inputs that can come back
//! (HTTP pull, pushers, RTSP cameras) keep the stream alive across their absences.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::backoff::Backoff;
use super::body::BodyFraming;
use super::body::BodyReader;
use super::mkv::{DemuxError, DemuxEvent, DemuxLimits, MkvDemuxer};
use super::push::{PushConn, PushInbox};
use super::rtsp::{self, RtspOptions, RtspTransport, RtspUrl};
use crate::stream::{Demand, InputState, Publisher};

/// Bytes read from an input at a time.
const READ_SIZE: usize = 64 * 1024;
/// A pulled or pushed input that sends nothing for this long is considered gone.
const INPUT_SILENCE: Duration = Duration::from_secs(15);
/// Largest response head accepted from a server we pull from.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// What a stream reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A Matroska/WebM file played at real time.
    File { path: PathBuf, looped: bool },
    /// Matroska on standard input, not paced.
    Stdin,
    /// Pulled from an HTTP server; reconnects when the connection ends.
    Http { url: String },
    /// Fed by PUT/POST to /NAME/ingest.
    Push,
    /// An RTSP camera (or server), read with retina; reconnects when the session ends.
    /// On demand (`#on-demand`), connected only while someone watches.
    Rtsp {
        url: RtspUrl,
        transport: RtspTransport,
        on_demand: bool,
    },
}

impl Input {
    /// Reads an INPUT of the command line. Fails on a malformed `rtsp://` URL.
    pub fn parse(spec: &str, looped: bool) -> Result<Input, String> {
        Ok(if spec == "-" {
            Input::Stdin
        } else if spec == "push" {
            Input::Push
        } else if spec.starts_with("http://") {
            Input::Http {
                url: spec.to_string(),
            }
        } else if spec
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("rtsp://"))
        {
            let (spec, on_demand) = match spec.strip_suffix("#on-demand") {
                Some(s) => (s, true),
                None => (spec, false),
            };
            let (url, transport) = rtsp::parse_url(spec)?;
            Input::Rtsp {
                url,
                transport,
                on_demand,
            }
        } else {
            Input::File {
                path: PathBuf::from(spec),
                looped,
            }
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Input::File { path, looped } => {
                format!(
                    "{}{}",
                    path.display(),
                    if *looped { " (looped)" } else { "" }
                )
            }
            Input::Stdin => "stdin".into(),
            Input::Http { url } => url.clone(),
            Input::Push => "push".into(),
            // Never the password.
            Input::Rtsp {
                url,
                transport,
                on_demand,
            } => format!(
                "{url}{}{}",
                match transport {
                    RtspTransport::Tcp => "",
                    RtspTransport::Udp => " (udp)",
                },
                if *on_demand { " (on demand)" } else { "" }
            ),
        }
    }
}

/// Reader settings.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Files start this far "in the past", so the first viewers get a buffer at once.
    pub prefill: Duration,
    pub limits: DemuxLimits,
    /// An RTSP session with no media for this long is reconnected.
    pub rtsp_timeout: Duration,
    /// An on-demand input disconnects after this long without viewers.
    pub idle_close: Duration,
}

/// Why one pass over an input stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("{0}")]
    Demux(#[from] DemuxError),
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Other(String),
}

/// Keeps a file's frames at real time: a frame is released when the wall clock reaches its
/// place on the output timeline (minus the prefill).
struct Pacer {
    start: Instant,
    first_pts: Option<i64>,
    prefill_ns: i64,
}

impl Pacer {
    fn new(prefill: Duration) -> Self {
        Pacer {
            start: Instant::now(),
            first_pts: None,
            prefill_ns: prefill.as_nanos().min(i64::MAX as u128) as i64,
        }
    }

    /// Sleeps until the frame at `pts` is due, calling `before_sleep` first if it must.
    fn wait(&mut self, pts: i64, before_sleep: impl FnOnce()) {
        let first = *self.first_pts.get_or_insert(pts);
        let due_ns = pts.saturating_sub(first).saturating_sub(self.prefill_ns);
        if due_ns <= 0 {
            return;
        }
        let due = self.start + Duration::from_nanos(due_ns as u64);
        let now = Instant::now();
        if due > now {
            before_sleep();
            thread::sleep(due - now);
        }
    }
}

/// Demuxes `reader` to the end (or the first error), publishing as it goes. Returns the
/// number of frames published.
///
/// What one read of the input produces goes to the event loop as one batch, sent before
/// the next read or pacing sleep (either may block): unpaced input of small frames
/// otherwise costs a channel message per frame and per part.
/// Why a reader stopped when its stream was removed by a configuration reload.
const REMOVED: &str = "the stream was removed (configuration reload)";

fn pump(
    reader: &mut dyn Read,
    publisher: &mut Publisher,
    pacer: Option<&mut Pacer>,
    limits: &DemuxLimits,
    label: &str,
) -> Result<u64, PassError> {
    publisher.set_batching(true);
    let result = pump_batched(reader, publisher, pacer, limits, label);
    publisher.set_batching(false);
    result
}

fn pump_batched(
    reader: &mut dyn Read,
    publisher: &mut Publisher,
    mut pacer: Option<&mut Pacer>,
    limits: &DemuxLimits,
    label: &str,
) -> Result<u64, PassError> {
    let mut demux = MkvDemuxer::new(limits.clone());
    let mut buf = vec![0u8; READ_SIZE];
    let mut frames = 0u64;
    let mut eof = false;
    let mut seen_tracks = false;
    loop {
        let event = if eof {
            demux.finish()?
        } else {
            demux.next_event()?
        };
        match event {
            Some(DemuxEvent::Tracks(tracks)) => {
                // A second header in one byte stream (concatenated files, a muxer that
                // restarted) starts a new clock.
                if seen_tracks {
                    publisher.begin_segment();
                }
                seen_tracks = true;
                publisher.tracks(tracks)
            }
            Some(DemuxEvent::Frame(frame)) => {
                if let Some(pts) = publisher.frame(frame) {
                    frames += 1;
                    if let Some(p) = pacer.as_deref_mut() {
                        p.wait(pts, || publisher.flush());
                    }
                }
            }
            Some(DemuxEvent::Resync { skipped, reason }) => {
                warn!(
                    "{label}: skipped {skipped} undecodable bytes ({reason}); resuming at the next keyframe"
                );
                publisher.resync();
            }
            None if eof => return Ok(frames),
            None => {
                // The read may block: what the last one produced goes out first.
                publisher.flush();
                if publisher.stopped() {
                    return Err(PassError::Other(REMOVED.into()));
                }
                match reader.read(&mut buf) {
                    Ok(0) => eof = true,
                    Ok(n) => demux.feed(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Runs a stream's input to its end. Returns Err with the reason when it failed for good.
pub fn run_input(
    input: Input,
    mut publisher: Publisher,
    options: ReaderOptions,
    label: String,
    pushers: Option<PushInbox>,
    demand: Arc<Demand>,
) {
    let result = match input {
        Input::File { path, looped } => run_file(&path, looped, &mut publisher, &options, &label),
        Input::Stdin => {
            publisher.state(InputState::Starting);
            let mut stdin = io::stdin().lock();
            pump(&mut stdin, &mut publisher, None, &options.limits, &label)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Input::Http { url } => run_http(&url, &mut publisher, &options, &label),
        Input::Rtsp {
            url,
            transport,
            on_demand,
        } => {
            let rtsp_options = RtspOptions {
                timeout: options.rtsp_timeout,
                on_demand: on_demand.then_some((demand, options.idle_close)),
            };
            rtsp::run_rtsp(&url, transport, &mut publisher, &rtsp_options, &label)
        }
        Input::Push => match pushers {
            Some(inbox) => {
                run_push(inbox, &mut publisher, &options, &label);
                Ok(())
            }
            None => Err("push input without a push slot".into()),
        },
    };
    publisher.end(result.err());
}

fn run_file(
    path: &PathBuf,
    looped: bool,
    publisher: &mut Publisher,
    options: &ReaderOptions,
    label: &str,
) -> Result<(), String> {
    publisher.state(InputState::Starting);
    let mut pacer = Pacer::new(options.prefill);
    let mut pass = 0u64;
    loop {
        let mut file =
            File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if pass > 0 {
            publisher.begin_segment();
        }
        let frames = pump(
            &mut file,
            publisher,
            Some(&mut pacer),
            &options.limits,
            label,
        )
        .map_err(|e| e.to_string())?;
        if frames == 0 {
            return Err(format!("{} holds no playable frames", path.display()));
        }
        if !looped {
            return Ok(());
        }
        pass += 1;
    }
}

fn run_http(
    url: &str,
    publisher: &mut Publisher,
    options: &ReaderOptions,
    label: &str,
) -> Result<(), String> {
    let target = HttpTarget::parse(url)?;
    let mut backoff = Backoff::new();
    let mut first = true;
    publisher.state(InputState::Starting);
    loop {
        let outcome = target.open().map_err(PassError::from).and_then(|mut body| {
            if !first {
                publisher.resume_after_gap();
            }
            first = false;
            info!("{label}: connected to {url}");
            pump(&mut body, publisher, None, &options.limits, label)
        });
        if publisher.stopped() {
            return Err(REMOVED.into());
        }
        let why = match outcome {
            Ok(frames) => {
                if frames > 0 {
                    backoff.reset();
                }
                "the server ended the stream".to_string()
            }
            Err(e) => e.to_string(),
        };
        let delay = backoff.delay();
        warn!(
            "{label}: {why}; reconnecting in {:.1} s",
            delay.as_secs_f64()
        );
        publisher.state(InputState::Reconnecting(why));
        // In steps, so that a removed stream does not wait out a 30 s backoff.
        let until = std::time::Instant::now() + delay;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            if publisher.stopped() {
                return Err(REMOVED.into());
            }
            thread::sleep(left.min(Duration::from_millis(250)));
        }
        if publisher.stopped() {
            return Err(REMOVED.into());
        }
    }
}

/// An `http://host[:port]/path` URL.
struct HttpTarget {
    host: String,
    port: u16,
    path: String,
}

impl HttpTarget {
    fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs can be pulled"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!("{url}: credentials in pull URLs are not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url}: bad port {p:?}"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(HttpTarget {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path: path.to_string(),
        })
    }

    fn open(&self) -> io::Result<BodyReader<TcpStream>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut socket = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut socket = socket.ok_or(last)?;
        socket.set_read_timeout(Some(INPUT_SILENCE))?;
        socket.set_write_timeout(Some(Duration::from_secs(5)))?;
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        write!(
            socket,
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: muxcast/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path,
            env!("CARGO_PKG_VERSION")
        )?;
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            }
            head.extend_from_slice(&buf[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&head) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = resp.code.unwrap_or(0);
                    if code != 200 {
                        return Err(io::Error::other(format!(
                            "server answered {code} {}",
                            resp.reason.unwrap_or("")
                        )));
                    }
                    let mut framing = BodyFraming::None;
                    for h in resp.headers.iter() {
                        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                        if h.name.eq_ignore_ascii_case("transfer-encoding")
                            && v.to_ascii_lowercase().contains("chunked")
                        {
                            framing = BodyFraming::Chunked;
                        } else if h.name.eq_ignore_ascii_case("content-length")
                            && framing == BodyFraming::None
                        {
                            let n = v.parse().map_err(|_| {
                                io::Error::other(format!("bad Content-Length {v:?}"))
                            })?;
                            framing = BodyFraming::Length(n);
                        }
                    }
                    let leftover = head[len..].to_vec();
                    return Ok(BodyReader::new(socket, leftover, framing, true));
                }
                Ok(httparse::Status::Partial) if head.len() > MAX_RESPONSE_HEAD => {
                    return Err(io::Error::other("response head too large"));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(io::Error::other(format!("malformed response: {e}"))),
            }
        }
    }
}

fn run_push(inbox: PushInbox, publisher: &mut Publisher, options: &ReaderOptions, label: &str) {
    publisher.state(InputState::WaitingForPusher);
    let mut pushes = 0u64;
    while let Ok(conn) = inbox.rx.recv() {
        let PushConn {
            mut socket,
            leftover,
            framing,
            expect_continue,
        } = conn;
        let peer = socket
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        info!("{label}: pusher {peer} connected");
        let _ = socket.set_read_timeout(Some(INPUT_SILENCE));
        let _ = socket.set_write_timeout(Some(Duration::from_secs(5)));
        if expect_continue {
            let _ = socket.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if pushes > 0 {
            publisher.resume_after_gap();
        }
        pushes += 1;
        let reply_to = socket.try_clone();
        let mut body = BodyReader::new(socket, leftover, framing, framing == BodyFraming::None);
        let result = pump(&mut body, publisher, None, &options.limits, label);
        let reply = match &result {
            Ok(_) => {
                info!("{label}: pusher {peer} finished");
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string()
            }
            Err(e) => {
                warn!("{label}: pusher {peer}: {e}");
                let body = format!("400 Bad Request: {e}\n");
                format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        publisher.state(InputState::WaitingForPusher);
        // Free the slot before answering: a pusher that reconnects as soon as it has its
        // answer must not be told another pusher is live.
        inbox.active.store(false, Ordering::SeqCst);
        if let Ok(mut s) = reply_to {
            let _ = s.write_all(reply.as_bytes());
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
