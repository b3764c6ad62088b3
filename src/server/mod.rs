//! The mio event loop: accepts clients, parses requests, routes, and writes live and finite
//! responses without blocking. Reader threads reach it only through the update channel
//! and its waker.

pub mod access;
mod hls;
pub mod http;
mod metrics;
mod page;
pub mod response;
mod status;

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::ingest::push::PushConn;
use crate::stream::cmaf::CmafUpdate;
use crate::stream::dash::{self, DashSettings};
use crate::stream::live::{Gop, LiveLog, Next, WindowOptions};
use crate::stream::rendition::Rendition;
use crate::stream::segment_file::SegmentFile;
use crate::stream::{Demand, InputState, LoopNotify, Update};
use http::{BodyFraming, Method, Request, Route};
use metrics::{MediaKind, Rejection, RequestClass};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Slices per writev: enough to batch a GOP's worth of small frames, well under IOV_MAX.
const MAX_IOVECS: usize = 64;
/// Bytes read per read call while receiving a request head.
const READ_CHUNK: usize = 4096;

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub max_clients: usize,
    /// Connections from one address beyond this get 503: one host cannot take every
    /// slot (`max_clients`) from the others.
    pub max_clients_per_ip: usize,
    /// A client that takes nothing of what it is sent for this long is closed.
    pub client_timeout: Duration,
    /// A request head must be complete within this (also the keep-alive idle limit).
    pub header_timeout: Duration,
    pub keep_running: bool,
    pub window: WindowOptions,
    /// Install SIGINT/SIGTERM handlers (the binary does; tests use [`ShutdownHandle`]).
    pub handle_signals: bool,
    pub hls: HlsOptions,
    /// Client networks that may connect; empty: everyone. Others get 403.
    pub allow: Vec<access::Network>,
}

/// HLS serving settings (the segmenter's durations are the publisher's).
#[derive(Clone, Debug)]
pub struct HlsOptions {
    /// Segments kept per rendition.
    pub window: usize,
    /// The configured segment duration rounded up; a stream's own target is chosen by
    /// its first segment (whole GOPs) and replaces it.
    pub target_duration_s: u32,
    /// Whether `target_duration_s` is the stream's own: playlists wait for it.
    pub target_known: bool,
    pub part_target_s: f64,
    /// LL-HLS tags and blocking requests; off (`--no-ll-hls`) for caches that cannot
    /// hold blocking requests.
    pub low_latency: bool,
    /// Appended to every URL a playlist or manifest hands out (a protected stream's
    /// `?token=`); empty for open streams.
    pub url_suffix: Arc<str>,
}

impl Default for HlsOptions {
    fn default() -> Self {
        HlsOptions {
            window: 10,
            target_duration_s: 2,
            target_known: true,
            part_target_s: 0.2,
            low_latency: true,
            url_suffix: Arc::from(""),
        }
    }
}

/// How the event loop hands pushers to a push stream.
#[derive(Clone)]
pub struct PushSlot {
    pub tx: Sender<PushConn>,
    /// True while a pusher is connected: a second one gets 409. The loop sets it, the
    /// reader thread clears it when its pusher leaves.
    pub active: Arc<AtomicBool>,
}

/// Stops a running server from another thread (tests, embedding).
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// Work for a server's loop from another thread: run with the server, between rounds
/// (a configuration reload adds and removes streams this way).
pub type Control = Box<dyn FnOnce(&mut Server) + Send>;

/// Hands [`Control`] work to a running server's loop.
#[derive(Clone)]
pub struct ControlHandle {
    tx: Sender<Control>,
    waker: Arc<Waker>,
}

impl ControlHandle {
    /// Queues `work`; false when the server has stopped.
    pub fn run(&self, work: Control) -> bool {
        let sent = self.tx.send(work).is_ok();
        let _ = self.waker.wake();
        sent
    }
}

/// Counters the event loop keeps per stream.
#[derive(Debug, Default)]
struct StreamStats {
    bytes_sent: u64,
    gops_skipped: u64,
    clients_total: u64,
    bytes_in: u64,
    rate_started: Option<Instant>,
    rate_bytes: u64,
    bitrate_bps: u64,
    /// Frames from the input (one live-MKV chunk each).
    frames: u64,
    /// Reconnects the reader scheduled (each `Reconnecting` state it reported).
    reconnects: u64,
    /// Segments published, per rendition id, in order of appearance.
    segments: Vec<(String, u64)>,
    /// HLS/DASH requests naming the stream, by [`MediaKind`].
    requests: [u64; metrics::MEDIA_KINDS.len()],
}

impl StreamStats {
    /// The ingest bitrate of the last measuring window (~5 s), or 0 when nothing has
    /// arrived for a while (a window is closed only by the chunk that follows it).
    fn ingest_bps(&self, now: Instant) -> u64 {
        match self.rate_started {
            Some(t) if now.duration_since(t) <= Duration::from_secs(10) => self.bitrate_bps,
            _ => 0,
        }
    }
}

struct StreamSlot {
    name: String,
    input: String,
    state: InputState,
    error: Option<String>,
    log: LiveLog,
    subscribers: Vec<Token>,
    push: Option<PushSlot>,
    stats: StreamStats,
    live_since: Option<Instant>,
    over: bool,
    /// HLS/DASH renditions (empty until the first GOP, or when HLS/DASH are off).
    renditions: Vec<Rendition>,
    /// Since when audio chunks wait for the next video frame to be written with it.
    unflushed_since: Option<Instant>,
    /// Connections waiting for a part of this stream.
    waiters: Vec<Token>,
    /// PART-TARGET as the publisher fixed it (whole frames); None until renditions exist.
    part_target_s: Option<f64>,
    /// EXT-X-TARGETDURATION as the first segment fixed it.
    target_duration_s: Option<u32>,
    /// When someone last asked for this stream (on-demand inputs read it).
    demand: Arc<Demand>,
    /// Whether its publisher makes HLS/DASH (off with `--no-hls`).
    cmaf: bool,
    /// Its tracks make no HLS/DASH rendition (an MJPEG camera): playlist requests get a
    /// 404 at once rather than waiting for one. Kept while idle (on demand): the
    /// publisher keeps its tracks, and says so again only when they change.
    no_renditions: bool,
    /// Removed by a configuration reload: kept as a tombstone (ids are never reused, so
    /// late updates of its reader cannot land on another stream), found by no request.
    retired: bool,
    /// Tells its reader to stop (see `Publisher::stopped`).
    stop: Arc<AtomicBool>,
    /// Who may read it and push to it.
    access: access::StreamAccess,
    /// `access.url_suffix()`, made once.
    url_suffix: Arc<str>,
}

struct LiveCursor {
    stream: usize,
    generation: u64,
    webm: bool,
    /// Whether the response head and Matroska header were queued yet (a client that
    /// arrives before the stream has tracks waits for them).
    started: bool,
    /// For a viewer that arrived before the stream had a GOP: the GOP sequence number
    /// from which it wants everything.
    join_seq: Option<u64>,
    gop: Option<Rc<Gop>>,
    chunk: usize,
    offset: usize,
    /// Stop at the next chunk boundary (shutdown).
    finishing: bool,
}

enum Phase {
    Request,
    /// Writing a finite response; afterwards read the next request or close.
    Response {
        keep_alive: bool,
    },
    Live(LiveCursor),
    /// An LL-HLS request held until its playlist update or part exists (blocking
    /// playlist reload, preload hint): a waiter record, woken when a part is published.
    Waiting(hls::Waiter),
    /// A DASH segment sent while it is written (chunked), woken like a waiter.
    Streaming(hls::SegmentStream),
}

struct Conn {
    socket: TcpStream,
    inbuf: Vec<u8>,
    out: VecDeque<Bytes>,
    out_offset: usize,
    phase: Phase,
    /// When the current request head began (header timeout, keep-alive idle).
    request_started: Instant,
    /// Set when a write hit WouldBlock with data pending; cleared by any progress.
    blocked_since: Option<Instant>,
    /// A request of this connection was answered: an empty head that times out later is
    /// an idle keep-alive, not a slow client.
    answered: bool,
    close_when_flushed: bool,
    /// Answered a request this round and may have more input: served again from
    /// `Server::deferred` after the other ready connections, not back to back.
    deferred: bool,
    /// A segment (or a range of one) to `sendfile` once `out` is written.
    file_out: Option<FileOut>,
    /// The peer's address, counted in `Server::per_ip` while the connection lives.
    ip: IpAddr,
    /// The last read took less than asked (or would block): the socket was empty then,
    /// and new input brings a new (edge-triggered) readable event, which clears this. Saves
    /// the `recv` that would only say EAGAIN after every answer (as tokio does on Linux).
    drained: bool,
    /// The peer has sent its FIN (EPOLLRDHUP). A short read is then not "empty": the end
    /// of the stream is still to be read, and no further readiness edge will say so when
    /// the bytes and the FIN came in one event.
    peer_closed: bool,
}

/// The rest of a memory-file body: bytes `offset..end` of `file`.
struct FileOut {
    file: Arc<SegmentFile>,
    offset: u64,
    end: u64,
}

enum Flow {
    Open,
    Close,
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    /// A wake-up is on its way: readers add to the channel without waking again.
    wake_pending: Arc<AtomicBool>,
    tx: SyncSender<(usize, Update)>,
    rx: Receiver<(usize, Update)>,
    conns: Slab<Conn>,
    streams: Vec<StreamSlot>,
    options: ServerOptions,
    shutdown: Arc<AtomicBool>,
    shutting_down: Option<Instant>,
    accept_paused_until: Option<Instant>,
    started: Instant,
    /// Keep-alive connections that got one answer this round (see `Conn::deferred`):
    /// one request per connection per round, as nginx posts such events, so a client
    /// that sends its next request at once cannot hold the loop (one `wrk` connection
    /// was served 6783 times in a row, and p99 was 140 ms against nginx's 6 ms).
    deferred: Vec<Token>,
    /// Open connections per client address (see `ServerOptions::max_clients_per_ip`).
    per_ip: HashMap<IpAddr, usize>,
    /// Where reads land before they are appended to a connection's input (one buffer,
    /// zeroed once, not a fresh array per read).
    read_buf: Box<[u8; READ_CHUNK]>,
    /// Server-wide counters for `/metrics`.
    counters: metrics::Counters,
    control_tx: Sender<Control>,
    control_rx: Receiver<Control>,
}

impl Server {
    pub fn bind(options: ServerOptions) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(options.listen)?;
        raise_backlog(&listener)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // Bounded: a loop starved of CPU makes fast inputs wait (TCP backpressure to a
        // pusher or an HTTP source, a paced file falls behind) instead of queueing their
        // updates without limit (153 MiB once, under heavy outside load).
        let (tx, rx) = sync_channel(UPDATE_QUEUE);
        let (control_tx, control_rx) = std::sync::mpsc::channel();
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            waker,
            wake_pending: Arc::new(AtomicBool::new(false)),
            tx,
            rx,
            conns: Slab::new(),
            streams: Vec::new(),
            options,
            shutdown: Arc::new(AtomicBool::new(false)),
            shutting_down: None,
            accept_paused_until: None,
            started: Instant::now(),
            deferred: Vec::new(),
            per_ip: HashMap::new(),
            read_buf: Box::new([0; READ_CHUNK]),
            counters: metrics::Counters::default(),
            control_tx,
            control_rx,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Declares a stream; returns its id for the reader thread's [`crate::stream::Publisher`].
    pub fn add_stream(&mut self, name: &str, input: &str, push: Option<PushSlot>) -> usize {
        self.streams.push(StreamSlot {
            name: name.to_string(),
            input: input.to_string(),
            state: InputState::Starting,
            error: None,
            log: LiveLog::new(self.options.window.clone()),
            subscribers: Vec::new(),
            push,
            stats: StreamStats::default(),
            live_since: None,
            over: false,
            renditions: Vec::new(),
            unflushed_since: None,
            waiters: Vec::new(),
            part_target_s: None,
            target_duration_s: None,
            demand: Demand::new(),
            cmaf: true,
            no_renditions: false,
            retired: false,
            stop: Arc::default(),
            access: access::StreamAccess::default(),
            url_suffix: Arc::from(""),
        });
        self.streams.len() - 1
    }

    /// The flag that stops stream `id`'s reader when the stream is removed.
    pub fn stop_flag(&self, id: usize) -> Arc<AtomicBool> {
        self.streams[id].stop.clone()
    }

    /// Whether a stream named `name` is served.
    pub fn has_stream(&self, name: &str) -> bool {
        self.streams.iter().any(|s| !s.retired && s.name == name)
    }

    /// Removes stream `name`: its reader is told to stop (an RTSP camera is hung up),
    /// its live-MKV viewers get the end of the stream, held requests are answered, and
    /// its segments are let go. Returns whether there was such a stream.
    pub fn remove_stream(&mut self, name: &str) -> bool {
        let Some(id) = self
            .streams
            .iter()
            .position(|s| !s.retired && s.name == name)
        else {
            return false;
        };
        let slot = &mut self.streams[id];
        slot.retired = true;
        slot.stop.store(true, Ordering::SeqCst);
        // Dropping the push slot ends a push reader waiting for its next pusher.
        slot.push = None;
        slot.over = true;
        slot.log.end();
        slot.renditions.clear();
        info!("stream {name}: removed");
        self.wake_waiters(id, Instant::now(), true);
        self.write_viewers(id);
        true
    }

    /// The streams requests can reach (not removed ones).
    fn active_streams(&self) -> impl Iterator<Item = &StreamSlot> {
        self.streams.iter().filter(|s| !s.retired)
    }

    /// Sets who may read stream `id` and push to it (everyone until told).
    pub fn set_access(&mut self, id: usize, rules: access::StreamAccess) {
        let slot = &mut self.streams[id];
        slot.url_suffix = Arc::from(rules.url_suffix());
        slot.access = rules;
    }

    /// Whether stream `id` makes HLS/DASH (on unless told): a request for its playlist
    /// before the first segment then waits for it instead of a 404.
    pub fn set_cmaf(&mut self, id: usize, on: bool) {
        self.streams[id].cmaf = on;
    }

    fn publishes_cmaf(&self, id: usize) -> bool {
        self.streams[id].cmaf && !self.streams[id].no_renditions
    }

    /// When stream `id` was last wanted: an on-demand input connects only while it is.
    pub fn demand(&self, id: usize) -> Arc<Demand> {
        self.streams[id].demand.clone()
    }

    pub fn notifier(&self) -> LoopNotify {
        LoopNotify {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
            wake_pending: self.wake_pending.clone(),
        }
    }

    pub fn control_handle(&self) -> ControlHandle {
        ControlHandle {
            tx: self.control_tx.clone(),
            waker: self.waker.clone(),
        }
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.shutdown.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Runs until every stream has ended (unless `keep_running`) or a shutdown was asked
    /// for. Returns whether every stream ended without failing.
    pub fn run(mut self) -> io::Result<bool> {
        let mut signals = if self.options.handle_signals {
            let mut s = signal_hook_mio::v1_0::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            self.poll
                .registry()
                .register(&mut s, SIGNALS, Interest::READABLE)?;
            Some(s)
        } else {
            None
        };
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let timeout = if !self.deferred.is_empty() {
                Duration::ZERO
            } else if self.shutting_down.is_some() {
                Duration::from_millis(50)
            } else if self.streams.iter().any(|s| s.unflushed_since.is_some()) {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(500)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    SIGNALS => {
                        if let Some(s) = &mut signals {
                            for sig in s.pending() {
                                info!("signal {sig}: shutting down");
                                self.shutdown.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    token => self.conn_event(
                        token,
                        event.is_readable(),
                        event.is_writable(),
                        event.is_read_closed(),
                    ),
                }
            }
            self.drain_updates();
            while let Ok(work) = self.control_rx.try_recv() {
                work(&mut self);
            }
            self.serve_deferred();
            if self.shutdown.load(Ordering::SeqCst) && self.shutting_down.is_none() {
                self.begin_shutdown();
            }
            let now = Instant::now();
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept();
            }
            if now.duration_since(last_sweep) >= Duration::from_millis(250) {
                last_sweep = now;
                self.sweep(now);
            }
            if let Some(since) = self.shutting_down {
                let live = self
                    .conns
                    .iter()
                    .any(|(_, c)| matches!(c.phase, Phase::Live(_)));
                if !live || since.elapsed() > Duration::from_secs(2) {
                    return Ok(true);
                }
            }
            if !self.options.keep_running
                && !self.streams.is_empty()
                && self.streams.iter().all(|s| s.over)
                && !self
                    .conns
                    .iter()
                    .any(|(_, c)| matches!(c.phase, Phase::Live(_)))
            {
                let failed = self.streams.iter().any(|s| s.error.is_some());
                info!("every stream has ended; exiting");
                return Ok(!failed);
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = Some(Instant::now());
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let tokens: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in tokens {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match &mut conn.phase {
                Phase::Live(cursor) => {
                    cursor.finishing = true;
                    conn.close_when_flushed = true;
                }
                Phase::Request => {
                    self.close(Token(key));
                    continue;
                }
                Phase::Response { .. } => conn.close_when_flushed = true,
                Phase::Waiting(_) | Phase::Streaming(_) => {
                    self.close(Token(key));
                    continue;
                }
            }
            self.flush(Token(key));
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut socket, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or similar: the pending
                    // connections stay in the backlog; try again shortly.
                    warn!("accept failed: {e}; pausing accepts for 100 ms");
                    self.accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            let from_peer = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
            let refusal: Option<(&[u8], Rejection)> =
                if self.conns.len() >= self.options.max_clients {
                    Some((
                        b"503 Service Unavailable: too many clients\n",
                        Rejection::TooManyClients,
                    ))
                } else if from_peer >= self.options.max_clients_per_ip {
                    Some((
                        b"503 Service Unavailable: too many connections from your address\n",
                        Rejection::PerAddressCap,
                    ))
                } else {
                    None
                };
            if let Some((body, cause)) = refusal {
                self.counters.reject(cause);
                let msg = response::finite(
                    503,
                    "text/plain; charset=utf-8",
                    body,
                    false,
                    false,
                    "Retry-After: 5\r\n",
                );
                // Best effort on a fresh socket: the kernel buffer takes this at once.
                if let Ok(n) = socket.write(&msg) {
                    self.counters.bytes_out += n as u64;
                }
                debug!(
                    "{peer}: refused, {} clients connected, {from_peer} from its address",
                    self.conns.len()
                );
                continue;
            }
            let _ = socket.set_nodelay(true);
            if let Err(e) = limit_unsent(&socket) {
                debug!("{peer}: TCP_NOTSENT_LOWAT: {e}");
            }
            let entry = self.conns.vacant_entry();
            let token = Token(entry.key());
            if let Err(e) = self.poll.registry().register(
                &mut socket,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("{peer}: cannot register: {e}");
                continue;
            }
            *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
            self.counters.accepted += 1;
            entry.insert(Conn {
                ip: peer.ip(),
                socket,
                inbuf: Vec::new(),
                out: VecDeque::new(),
                out_offset: 0,
                phase: Phase::Request,
                request_started: Instant::now(),
                blocked_since: None,
                answered: false,
                close_when_flushed: false,
                deferred: false,
                file_out: None,
                drained: false,
                peer_closed: false,
            });
        }
    }

    fn conn_event(&mut self, token: Token, readable: bool, writable: bool, read_closed: bool) {
        if (readable || read_closed)
            && let Some(c) = self.conns.get_mut(token.0)
        {
            c.drained = false;
            c.peer_closed |= read_closed;
        }
        if writable {
            if let Some(c) = self.conns.get_mut(token.0) {
                c.blocked_since = None;
            }
            if let Flow::Close = self.drive(token) {
                self.close(token);
                return;
            }
        }
        if (readable || read_closed)
            && let Flow::Close = self.read(token)
        {
            self.close(token);
        }
    }

    /// Reads what the client sent: a request head, or (while streaming to it) anything,
    /// which is discarded, so a client that hangs up is noticed.
    fn read(&mut self, token: Token) -> Flow {
        loop {
            let Some(conn) = self.conns.get_mut(token.0) else {
                return Flow::Open;
            };
            let reading_request = matches!(conn.phase, Phase::Request);
            if !reading_request && !matches!(conn.phase, Phase::Live(_)) {
                // A finite answer is still going out: the next pipelined requests stay
                // in the socket (TCP holds the client back) until `drive` asks for them.
                return Flow::Open;
            }
            if conn.drained {
                return Flow::Open;
            }
            let buf = &mut self.read_buf[..];
            match conn.socket.read(buf) {
                Ok(0) => return Flow::Close,
                Ok(n) => {
                    conn.drained = n < READ_CHUNK && !conn.peer_closed;
                    if reading_request || !matches!(conn.phase, Phase::Live(_)) {
                        conn.inbuf.extend_from_slice(&buf[..n]);
                    }
                    if reading_request {
                        if let Flow::Close = self.drive(token) {
                            return Flow::Close;
                        }
                        if self.conns.get(token.0).is_some_and(|c| c.deferred) {
                            // The rest waits in the socket for its turn.
                            return Flow::Open;
                        }
                    } else if conn.inbuf.len() > http::MAX_HEADER_BYTES * 2 {
                        // A pipelining client that never lets us answer: stop buffering.
                        return Flow::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.drained = true;
                    return Flow::Open;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Flow::Close,
            }
        }
    }

    /// Reads one chunk of a connection's input into its buffer: Some(true) when bytes
    /// came, Some(false) when none are waiting, None when the client is gone.
    fn read_chunk(&mut self, token: Token) -> Option<bool> {
        let conn = self.conns.get_mut(token.0)?;
        if conn.drained {
            return Some(false);
        }
        let buf = &mut self.read_buf[..];
        loop {
            return match conn.socket.read(buf) {
                Ok(0) => None,
                Ok(n) => {
                    conn.drained = n < READ_CHUNK && !conn.peer_closed;
                    conn.inbuf.extend_from_slice(&buf[..n]);
                    Some(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.drained = true;
                    Some(false)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => None,
            };
        }
    }

    /// Parses and answers a complete request head in `inbuf`, if there is one.
    fn try_request(&mut self, token: Token) -> Flow {
        let Some(conn) = self.conns.get_mut(token.0) else {
            return Flow::Open;
        };
        if !matches!(conn.phase, Phase::Request) || conn.inbuf.is_empty() {
            return Flow::Open;
        }
        let req = match http::parse_request(&conn.inbuf) {
            Ok(Some(r)) => r,
            Ok(None) => return Flow::Open,
            Err(e) => {
                let (status, cause) = match e {
                    http::ParseError::TooLarge => (431, Rejection::HeaderTooLarge),
                    http::ParseError::Malformed(_) => (400, Rejection::BadRequest),
                };
                self.counters.reject(cause);
                debug!("bad request: {e}");
                conn.inbuf.clear();
                self.respond(
                    token,
                    response::error(status, &e.to_string(), false, false),
                    false,
                );
                return Flow::Open;
            }
        };
        self.handle(token, req)
    }

    fn respond(&mut self, token: Token, bytes: Bytes, keep_alive: bool) {
        if let Some(conn) = self.conns.get_mut(token.0) {
            conn.out.push_back(bytes);
            conn.phase = Phase::Response { keep_alive };
            if !keep_alive {
                conn.close_when_flushed = true;
            }
        }
    }

    fn handle(&mut self, token: Token, req: Request) -> Flow {
        let head_only = req.method == Method::Head;
        let route = http::route(&req.path);
        let (class, media) = request_class(&route);
        self.counters.request(class);
        if let Some((name, kind)) = media
            && let Some(slot) = self
                .streams
                .iter_mut()
                .find(|s| !s.retired && s.name == name)
        {
            slot.stats.requests[kind as usize] += 1;
        }
        let body_follows = !matches!(req.body, BodyFraming::None | BodyFraming::Length(0));
        let keep_alive = req.keep_alive && !body_follows && self.shutting_down.is_none();
        let is_ingest = matches!(route, Route::Ingest { .. });
        // A push hands the connection, and the body bytes after the head, to the stream's
        // reader thread; every other request is done with its head here.
        let handoff = is_ingest && matches!(req.method, Method::Put | Method::Post);
        if !handoff && let Some(conn) = self.conns.get_mut(token.0) {
            conn.inbuf.drain(..req.header_len.min(conn.inbuf.len()));
            conn.answered = true;
        }
        let allowed = if is_ingest {
            matches!(req.method, Method::Put | Method::Post | Method::Options)
        } else {
            matches!(req.method, Method::Get | Method::Head | Method::Options)
        };
        if route == Route::NotFound {
            self.counters.reject(Rejection::NotFound);
            let r = response::error(
                404,
                &format!("no such resource {}", req.path),
                keep_alive,
                head_only,
            );
            self.respond(token, r, keep_alive);
            return Flow::Open;
        }
        if !allowed {
            self.counters.reject(Rejection::MethodNotAllowed);
            let r = response::error(405, "method not allowed here", keep_alive, head_only);
            self.respond(token, r, keep_alive);
            return Flow::Open;
        }
        if req.method == Method::Options {
            // A CORS preflight never carries credentials: it is answered for everyone.
            self.respond(token, response::options(keep_alive), keep_alive);
            return Flow::Open;
        }
        if let Some(r) = self.refusal(token, &route, &req, keep_alive, head_only) {
            self.respond(token, r, keep_alive);
            return Flow::Open;
        }
        match route {
            Route::Page => {
                let names: Vec<&str> = self.active_streams().map(|s| s.name.as_str()).collect();
                let body = page::render(names.into_iter());
                self.respond_ok(
                    token,
                    "text/html; charset=utf-8",
                    body.as_bytes(),
                    keep_alive,
                    head_only,
                );
                Flow::Open
            }
            Route::HlsJs => {
                // Stored gzip-coded (see `page::HLS_JS_GZ`); every browser takes that.
                let answer = if req.accepts_gzip {
                    hls::Answer {
                        status: 200,
                        content_type: "text/javascript; charset=utf-8",
                        cache_control: "public, max-age=31536000, immutable",
                        body: vec![Bytes::from_static(page::HLS_JS_GZ)],
                        file: None,
                    }
                } else {
                    hls::Answer::error_for(
                        406,
                        "this script is served gzip-coded only: send Accept-Encoding: gzip".into(),
                    )
                };
                self.answer_with(
                    token,
                    answer,
                    "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n",
                    keep_alive,
                    head_only,
                );
                Flow::Open
            }
            Route::Metrics => {
                let body = metrics::render(self, Instant::now());
                self.respond_ok(
                    token,
                    metrics::CONTENT_TYPE,
                    body.as_bytes(),
                    keep_alive,
                    head_only,
                );
                Flow::Open
            }
            Route::Status => {
                let body = status::render(self.active_streams(), self.started, self.conns.len());
                self.respond_ok(
                    token,
                    "application/json",
                    body.as_bytes(),
                    keep_alive,
                    head_only,
                );
                Flow::Open
            }
            Route::LiveMkv { stream, webm } => self.start_live(token, &stream, webm, head_only),
            Route::Ingest { stream } => self.start_ingest(token, &stream, &req),
            Route::HlsRedirect { stream } => {
                self.redirect(
                    token,
                    &with_query(format!("/{stream}/index.m3u8"), &req.query),
                    keep_alive,
                    head_only,
                );
                Flow::Open
            }
            Route::HlsMultivariant { stream } => {
                let answer = match self.find_stream(&stream) {
                    None => hls::Answer::error_for(404, format!("no stream named {stream:?}")),
                    Some(id) => match hls::multivariant(
                        &self.streams[id].renditions,
                        &self.streams[id].url_suffix,
                    ) {
                        Some(text) => hls::Answer::playlist(text),
                        None if !self.streams[id].over && self.publishes_cmaf(id) => {
                            // The first viewer waits for the first segment (an on-demand
                            // camera connects for it), not a 404.
                            let waiter = hls::Waiter::first_multivariant(
                                id,
                                Instant::now(),
                                keep_alive,
                                head_only,
                            );
                            self.hold(token, id, Phase::Waiting(waiter), keep_alive, head_only);
                            return Flow::Open;
                        }
                        None => hls::Answer::error_for(
                            404,
                            format!("stream {stream:?} has no HLS renditions (yet)"),
                        ),
                    },
                };
                self.answer(token, answer, keep_alive, head_only);
                Flow::Open
            }
            Route::HlsRendition {
                stream,
                rendition,
                resource,
            } => {
                let Some(id) = self.find_stream(&stream) else {
                    let answer = hls::Answer::error_for(404, format!("no stream named {stream:?}"));
                    self.answer(token, answer, keep_alive, head_only);
                    return Flow::Open;
                };
                let now = Instant::now();
                let outcome = hls::request(
                    &self.streams[id].renditions,
                    &rendition,
                    resource,
                    &req.query,
                    &self.hls_options(id),
                    now,
                );
                match outcome {
                    hls::Outcome::Answer(answer) => self.answer_range(
                        token,
                        answer,
                        req.range.as_deref(),
                        keep_alive,
                        head_only,
                    ),
                    hls::Outcome::Wait(mut waiter) => {
                        waiter.stream = id;
                        waiter.keep_alive = keep_alive;
                        waiter.head_only = head_only;
                        self.hold(token, id, Phase::Waiting(waiter), keep_alive, head_only);
                    }
                    hls::Outcome::Stream(mut st) => {
                        st.stream = id;
                        st.keep_alive = keep_alive;
                        if self.hold(token, id, Phase::Streaming(st), keep_alive, head_only) {
                            // Send what already exists at once.
                            self.wake_waiters(id, now, false);
                        }
                    }
                }
                Flow::Open
            }
            Route::DashRedirect { stream } => {
                self.redirect(
                    token,
                    &with_query(format!("/{stream}/manifest.mpd"), &req.query),
                    keep_alive,
                    head_only,
                );
                Flow::Open
            }
            Route::DashManifest { stream } => {
                let answer = match self.find_stream(&stream) {
                    None => hls::Answer::error_for(404, format!("no stream named {stream:?}")),
                    Some(id) => match dash::mpd(
                        &self.streams[id].renditions,
                        &DashSettings {
                            segment_s: f64::from(self.hls_options(id).target_duration_s),
                            part_s: self.hls_options(id).part_target_s,
                            window: self.options.hls.window,
                            url_suffix: self.streams[id].url_suffix.to_string(),
                        },
                        unix_ms(),
                        &req.host
                            .as_ref()
                            .map_or("/time".to_string(), |h| format!("http://{h}/time")),
                    ) {
                        Some(text) => hls::Answer::mpd(text),
                        None => hls::Answer::error_for(
                            404,
                            format!("stream {stream:?} has no DASH representations (yet)"),
                        ),
                    },
                };
                self.answer(token, answer, keep_alive, head_only);
                Flow::Open
            }
            Route::Time => {
                let now = crate::stream::hls::rfc3339_ms(unix_ms());
                self.respond_ok(
                    token,
                    "text/plain; charset=utf-8",
                    now.as_bytes(),
                    keep_alive,
                    head_only,
                );
                Flow::Open
            }
            Route::NotFound => Flow::Close,
        }
    }

    /// The 403 (client network not allowed) or 401 (no or wrong credentials for the
    /// stream) this request gets, if any. Checked before anything is looked up that
    /// could start work (an on-demand camera), and answered with no stream data.
    fn refusal(
        &mut self,
        token: Token,
        route: &Route,
        req: &Request,
        keep_alive: bool,
        head_only: bool,
    ) -> Option<Bytes> {
        let ip = self.conns.get(token.0).map(|c| c.ip)?;
        if !access::allowed(&self.options.allow, ip) {
            self.counters.reject(Rejection::Forbidden);
            return Some(response::error(
                403,
                "your network may not use this server",
                keep_alive,
                head_only,
            ));
        }
        let (name, push) = route.stream()?;
        let slot = self.streams.iter().find(|s| !s.retired && s.name == name)?;
        let verdict = if push {
            slot.access.may_push(req)
        } else {
            slot.access.may_read(req)
        };
        verdict.err()?;
        self.counters.reject(Rejection::Unauthorized);
        let challenge = if push {
            "WWW-Authenticate: Bearer realm=\"muxcast push\"\r\n".to_string()
        } else if slot.access.offers_basic() {
            "WWW-Authenticate: Basic realm=\"muxcast\", charset=\"UTF-8\"\r\nWWW-Authenticate: Bearer realm=\"muxcast\"\r\n".to_string()
        } else {
            "WWW-Authenticate: Bearer realm=\"muxcast\"\r\n".to_string()
        };
        let what = if push {
            "this stream takes pushes with its key only (?key= or Authorization: Bearer)"
        } else {
            "this stream needs credentials (?token=, Authorization: Bearer or Basic)"
        };
        let body = format!("401: {what}\n");
        Some(response::finite(
            401,
            "text/plain; charset=utf-8",
            body.as_bytes(),
            keep_alive,
            head_only,
            &challenge,
        ))
    }

    /// Parks a connection as a waiter of stream `id` (LL-HLS, LL-DASH), or answers 503
    /// when the stream already holds as many as it may. Returns whether it was parked.
    fn hold(
        &mut self,
        token: Token,
        id: usize,
        phase: Phase,
        keep_alive: bool,
        head_only: bool,
    ) -> bool {
        if self.streams[id].waiters.len() >= MAX_WAITERS_PER_STREAM {
            let answer =
                hls::Answer::error_for(503, "too many blocked requests on this stream".into());
            self.answer(token, answer, keep_alive, head_only);
            return false;
        }
        self.streams[id].waiters.push(token);
        if let Some(conn) = self.conns.get_mut(token.0) {
            conn.phase = phase;
        }
        true
    }

    /// A 200 with a small body made for this request (page, status, metrics, time).
    fn respond_ok(
        &mut self,
        token: Token,
        content_type: &str,
        body: &[u8],
        keep_alive: bool,
        head_only: bool,
    ) {
        let r = response::finite(200, content_type, body, keep_alive, head_only, "");
        self.respond(token, r, keep_alive);
    }

    /// A 302 to `location` (the seed's short paths).
    fn redirect(&mut self, token: Token, location: &str, keep_alive: bool, head_only: bool) {
        let r = response::finite(
            302,
            "text/plain; charset=utf-8",
            b"",
            keep_alive,
            head_only,
            &format!("Location: {location}\r\n"),
        );
        self.respond(token, r, keep_alive);
    }

    /// Queues a finite answer whose body is a list of shared buffers (a segment is its
    /// parts' chunks, never copied into one).
    fn answer(&mut self, token: Token, answer: hls::Answer, keep_alive: bool, head_only: bool) {
        self.answer_range(token, answer, None, keep_alive, head_only);
    }

    /// Sends `answer`; a media answer (init, segment, part: finished, never changing)
    /// honours a single byte range.
    fn answer_range(
        &mut self,
        token: Token,
        answer: hls::Answer,
        range: Option<&str>,
        keep_alive: bool,
        head_only: bool,
    ) {
        self.answer_full(token, answer, range, "", keep_alive, head_only);
    }

    /// Sends `answer` with more header lines (each ending in CRLF) when it is a 200.
    fn answer_with(
        &mut self,
        token: Token,
        answer: hls::Answer,
        extra: &str,
        keep_alive: bool,
        head_only: bool,
    ) {
        let extra = if answer.status == 200 { extra } else { "" };
        self.answer_full(token, answer, None, extra, keep_alive, head_only);
    }

    fn answer_full(
        &mut self,
        token: Token,
        mut answer: hls::Answer,
        range: Option<&str>,
        extra_headers: &str,
        keep_alive: bool,
        head_only: bool,
    ) {
        let mut len: usize = answer.body.iter().map(Bytes::len).sum();
        let whole = len as u64;
        let mut file_range = 0..whole;
        let mut extra = extra_headers.to_string();
        if answer.status == 200 && answer.content_type == "video/mp4" {
            extra.push_str("Accept-Ranges: bytes\r\n");
            match response::range_ask(range, len as u64) {
                response::RangeAsk::Whole => {}
                response::RangeAsk::Part { start, end } => {
                    answer.status = 206;
                    answer.body = response::slice_buffers(&answer.body, start, end);
                    file_range = start..end + 1;
                    extra.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
                    len = (end - start + 1) as usize;
                }
                response::RangeAsk::Unsatisfiable => {
                    answer.status = 416;
                    answer.body.clear();
                    extra.push_str(&format!("Content-Range: bytes */{len}\r\n"));
                    len = 0;
                }
            }
        }
        if let Some(cause) = Rejection::of_status(answer.status) {
            self.counters.reject(cause);
        }
        let head = response::head(
            answer.status,
            answer.content_type,
            len,
            answer.cache_control,
            keep_alive,
            &extra,
        );
        let Some(conn) = self.conns.get_mut(token.0) else {
            return;
        };
        conn.out.push_back(head);
        match answer.file {
            // The same bytes as `body`, sent by the kernel from the memory file.
            Some(file)
                if !head_only
                    && matches!(answer.status, 200 | 206)
                    && file.len() as u64 == whole =>
            {
                conn.file_out = Some(FileOut {
                    file,
                    offset: file_range.start,
                    end: file_range.end,
                });
            }
            _ if !head_only => conn
                .out
                .extend(answer.body.into_iter().filter(|b| !b.is_empty())),
            _ => {}
        }
        conn.phase = Phase::Response { keep_alive };
        if !keep_alive {
            conn.close_when_flushed = true;
        }
    }

    /// The HLS settings of stream `id`: the server's, with the stream's PART-TARGET and
    /// target duration.
    fn hls_options(&self, id: usize) -> HlsOptions {
        stream_hls_options(&self.streams[id], &self.options.hls)
    }

    /// The stream named `name`; someone wants it now (see [`Demand`]).
    fn find_stream(&self, name: &str) -> Option<usize> {
        let id = self
            .streams
            .iter()
            .position(|s| !s.retired && s.name == name)?;
        self.streams[id].demand.touch();
        Some(id)
    }

    fn start_live(&mut self, token: Token, name: &str, webm: bool, head_only: bool) -> Flow {
        let Some(id) = self.find_stream(name) else {
            self.counters.reject(Rejection::NotFound);
            let r = response::error(404, &format!("no stream named {name:?}"), false, head_only);
            self.respond(token, r, false);
            return Flow::Open;
        };
        let slot = &self.streams[id];
        if slot.over {
            self.counters.reject(Rejection::NotFound);
            let why = slot.error.as_deref().unwrap_or("the input has ended");
            let r = response::error(
                404,
                &format!("stream {name:?} is over: {why}"),
                false,
                head_only,
            );
            self.respond(token, r, false);
            return Flow::Open;
        }
        if head_only {
            let ct = if webm {
                "video/webm"
            } else {
                "video/x-matroska"
            };
            self.respond(token, response::live_head(ct), false);
            return Flow::Open;
        }
        let join_seq = slot.log.start_gop().is_none().then(|| slot.log.next_seq());
        let Some(conn) = self.conns.get_mut(token.0) else {
            return Flow::Open;
        };
        conn.phase = Phase::Live(LiveCursor {
            stream: id,
            generation: 0,
            webm,
            started: false,
            join_seq,
            gop: None,
            chunk: 0,
            offset: 0,
            finishing: false,
        });
        conn.close_when_flushed = true;
        let slot = &mut self.streams[id];
        slot.subscribers.push(token);
        slot.stats.clients_total += 1;
        Flow::Open
    }

    fn start_ingest(&mut self, token: Token, name: &str, req: &Request) -> Flow {
        let push = self
            .find_stream(name)
            .and_then(|id| self.streams[id].push.clone());
        let Some(push) = push else {
            self.counters.reject(Rejection::NotFound);
            let r = response::error(404, &format!("no push stream named {name:?}"), false, false);
            self.respond(token, r, false);
            return Flow::Open;
        };
        if push.active.swap(true, Ordering::SeqCst) {
            self.counters.reject(Rejection::Conflict);
            let r = response::error(
                409,
                &format!("stream {name:?} already has a pusher"),
                false,
                false,
            );
            self.respond(token, r, false);
            return Flow::Open;
        }
        let Some(mut conn) = self.conns.try_remove(token.0) else {
            return Flow::Open;
        };
        self.release_ip(conn.ip);
        let _ = self.poll.registry().deregister(&mut conn.socket);
        let leftover = conn.inbuf.split_off(req.header_len.min(conn.inbuf.len()));
        let socket = std::net::TcpStream::from(std::os::fd::OwnedFd::from(conn.socket));
        if let Err(e) = socket.set_nonblocking(false) {
            warn!("stream {name}: cannot take pusher: {e}");
            push.active.store(false, Ordering::SeqCst);
            return Flow::Open;
        }
        let handoff = PushConn {
            socket,
            leftover,
            framing: req.body,
            expect_continue: req.expect_continue,
        };
        if push.tx.send(handoff).is_err() {
            push.active.store(false, Ordering::SeqCst);
        }
        // The connection left the loop: nothing more to do with this token.
        Flow::Open
    }

    /// Moves a connection as far as it can go now: writes what is pending, then answers
    /// the next pipelined request, and so on. A loop, not recursion, so a client that
    /// pipelines ten thousand requests costs time (bounded by its socket), not stack.
    fn drive(&mut self, token: Token) -> Flow {
        let mut answered = false;
        loop {
            if let Flow::Close = self.flush(token) {
                return Flow::Close;
            }
            let Some(conn) = self.conns.get_mut(token.0) else {
                return Flow::Open;
            };
            if !matches!(conn.phase, Phase::Request) {
                return Flow::Open;
            }
            if answered {
                // Its next request (if any) waits until the others had their turn.
                if !conn.deferred {
                    conn.deferred = true;
                    self.deferred.push(token);
                }
                return Flow::Open;
            }
            if conn.inbuf.is_empty() {
                // Requests that arrived while an answer was going out were left in the
                // socket: take the next chunk of them here (not through `read`, which
                // calls `drive`: no recursion, however long the pipeline).
                match self.read_chunk(token) {
                    Some(true) => continue,
                    Some(false) => return Flow::Open,
                    None => return Flow::Close,
                }
            }
            let before = conn.inbuf.len();
            if let Flow::Close = self.try_request(token) {
                return Flow::Close;
            }
            answered = self
                .conns
                .get(token.0)
                .is_some_and(|c| !matches!(c.phase, Phase::Request));
            match self.conns.get(token.0) {
                // Incomplete request: its rest may already be in the socket (left there
                // while an answer went out), else wait for the next readable event.
                Some(c) if matches!(c.phase, Phase::Request) && c.inbuf.len() == before => {
                    match self.read_chunk(token) {
                        Some(true) => {}
                        Some(false) => return Flow::Open,
                        None => return Flow::Close,
                    }
                }
                Some(_) => {}
                None => return Flow::Open,
            }
        }
    }

    /// Writes what is pending until the socket would block or there is nothing more.
    fn flush(&mut self, token: Token) -> Flow {
        let Some(conn) = self.conns.get_mut(token.0) else {
            return Flow::Open;
        };
        loop {
            if !conn.out.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = fill_slices(&mut slices, conn.out.iter(), conn.out_offset, MAX_IOVECS);
                let written = if conn.file_out.is_some() {
                    write_more(&conn.socket, &slices[..n])
                } else {
                    conn.socket.write_vectored(&slices[..n])
                };
                match written {
                    Ok(0) => return Flow::Close,
                    Ok(n) => {
                        conn.blocked_since = None;
                        self.counters.bytes_out += n as u64;
                        if let Phase::Live(c) = &conn.phase {
                            self.streams[c.stream].stats.bytes_sent += n as u64;
                        }
                        advance_queue(&mut conn.out, &mut conn.out_offset, n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.blocked_since.get_or_insert_with(Instant::now);
                        return Flow::Open;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Flow::Close,
                }
            }
            if let Some(file_out) = &mut conn.file_out {
                match send_file(&conn.socket, file_out) {
                    Ok(0) => return Flow::Close,
                    Ok(n) => {
                        conn.blocked_since = None;
                        self.counters.bytes_out += n as u64;
                        if file_out.offset >= file_out.end {
                            conn.file_out = None;
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.blocked_since.get_or_insert_with(Instant::now);
                        return Flow::Open;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Flow::Close,
                }
            }
            match &mut conn.phase {
                Phase::Request | Phase::Waiting(_) | Phase::Streaming(_) => return Flow::Open,
                Phase::Response { keep_alive } => {
                    if !*keep_alive || conn.close_when_flushed && self.shutting_down.is_some() {
                        return Flow::Close;
                    }
                    conn.phase = Phase::Request;
                    conn.close_when_flushed = false;
                    conn.request_started = Instant::now();
                    // A pipelined request may already be waiting: `drive` takes it next.
                    return Flow::Open;
                }
                Phase::Live(cursor) => {
                    let slot = &mut self.streams[cursor.stream];
                    match live_step(cursor, slot, &mut conn.out) {
                        LiveStep::Queued => continue,
                        LiveStep::NotWebm => {
                            self.counters.reject(Rejection::NotFound);
                            continue;
                        }
                        LiveStep::Write => {}
                        LiveStep::Wait => return Flow::Open,
                        LiveStep::End => return Flow::Close,
                    }
                    let Some(gop) = cursor.gop.clone() else {
                        return Flow::Open;
                    };
                    let result = gop.with_chunks(cursor.chunk, |chunks| {
                        let take = if cursor.finishing { 1 } else { MAX_IOVECS };
                        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                        let k = fill_slices(&mut slices, chunks.iter(), cursor.offset, take);
                        conn.socket.write_vectored(&slices[..k]).inspect(|&n| {
                            // Advance the cursor over whole and partial chunks.
                            let mut left = n;
                            for b in chunks.iter() {
                                let remaining = b.len() - cursor.offset;
                                if left >= remaining {
                                    left -= remaining;
                                    cursor.chunk += 1;
                                    cursor.offset = 0;
                                } else {
                                    cursor.offset += left;
                                    break;
                                }
                            }
                        })
                    });
                    match result {
                        Ok(0) => return Flow::Close,
                        Ok(n) => {
                            conn.blocked_since = None;
                            slot.stats.bytes_sent += n as u64;
                            self.counters.bytes_out += n as u64;
                            if cursor.finishing && cursor.offset == 0 {
                                return Flow::Close;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            conn.blocked_since.get_or_insert_with(Instant::now);
                            return Flow::Open;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Flow::Close,
                    }
                }
            }
        }
    }

    /// Gives each deferred connection its next turn (which may defer it again).
    fn serve_deferred(&mut self) {
        for token in std::mem::take(&mut self.deferred) {
            let Some(conn) = self.conns.get_mut(token.0) else {
                continue;
            };
            if !std::mem::take(&mut conn.deferred) {
                // A new connection under a closed one's token.
                continue;
            }
            if let Flow::Close = self.drive(token) {
                self.close(token);
            }
        }
    }

    /// A connection from `ip` left the loop.
    fn release_ip(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn close(&mut self, token: Token) {
        let Some(mut conn) = self.conns.try_remove(token.0) else {
            return;
        };
        self.release_ip(conn.ip);
        let _ = self.poll.registry().deregister(&mut conn.socket);
        if let Phase::Live(c) = &conn.phase
            && let Some(slot) = self.streams.get_mut(c.stream)
            && let Some(pos) = slot.subscribers.iter().position(|t| *t == token)
        {
            slot.subscribers.swap_remove(pos);
            // Wanted until this moment: --idle-close counts from the viewer leaving, not
            // from the last sweep's touch (up to 250 ms earlier).
            slot.demand.touch();
        }
        let waiting_on = match &conn.phase {
            Phase::Waiting(w) => Some(w.stream),
            Phase::Streaming(st) => Some(st.stream),
            _ => None,
        };
        if let Some(stream) = waiting_on
            && let Some(slot) = self.streams.get_mut(stream)
            && let Some(pos) = slot.waiters.iter().position(|t| *t == token)
        {
            slot.waiters.swap_remove(pos);
            slot.demand.touch();
        }
    }

    fn drain_updates(&mut self) {
        // Cleared before draining: an update sent after this wakes the loop again, one
        // sent before it is drained below.
        self.wake_pending.store(false, Ordering::SeqCst);
        let mut touched: Vec<usize> = Vec::new();
        // The updates of a batch, applied one by one as if each had come alone; `now` is
        // when the current message was taken (a batch arrived all at once).
        let mut batch = Vec::new().into_iter();
        let mut batch_id = 0;
        let mut now = Instant::now();
        loop {
            let (id, update) = match batch.next() {
                Some(update) => (batch_id, update),
                None => match self.rx.try_recv() {
                    Ok((id, Update::Batch(updates))) => {
                        (batch_id, batch) = (id, updates.into_iter());
                        now = Instant::now();
                        continue;
                    }
                    Ok(x) => {
                        now = Instant::now();
                        x
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            // A removed stream's reader may send a little more before it sees its stop.
            let Some(slot) = self.streams.get_mut(id).filter(|s| !s.retired) else {
                continue;
            };
            let cmaf = matches!(update, Update::Cmaf(_));
            match update {
                Update::State(state) => {
                    if state == InputState::Live && slot.live_since.is_none() {
                        slot.live_since = Some(Instant::now());
                    }
                    if let InputState::Reconnecting(_) = state {
                        slot.stats.reconnects += 1;
                    }
                    if state == InputState::Idle {
                        // An on-demand input hung up: what it published is stale. The
                        // next viewer waits for the first keyframe of the next session
                        // rather than starting minutes in the past.
                        slot.log.forget_gops();
                        slot.renditions.clear();
                    }
                    slot.state = state;
                }
                Update::Headers(h) => slot.log.set_headers(h),
                Update::Chunk {
                    bytes,
                    starts_gop,
                    pts_ns,
                    flush,
                } => {
                    if flush {
                        slot.unflushed_since = None;
                    } else {
                        slot.unflushed_since.get_or_insert(now);
                    }
                    let stats = &mut slot.stats;
                    stats.frames += 1;
                    stats.bytes_in += bytes.len() as u64;
                    stats.rate_bytes += bytes.len() as u64;
                    let started = *stats.rate_started.get_or_insert(now);
                    let elapsed = now.duration_since(started);
                    if elapsed >= Duration::from_secs(5) {
                        stats.bitrate_bps =
                            (stats.rate_bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
                        stats.rate_bytes = 0;
                        stats.rate_started = Some(now);
                    }
                    slot.log.push(bytes, starts_gop, pts_ns);
                }
                Update::Cmaf(u) => apply_cmaf(slot, u, self.options.hls.window),
                Update::End { error } => {
                    match &error {
                        Some(e) => warn!("stream {}: input {} failed: {e}", slot.name, slot.input),
                        None => info!("stream {}: input {} ended", slot.name, slot.input),
                    }
                    slot.error = error;
                    slot.over = true;
                    slot.log.end();
                }
                // Taken apart above: a batch never holds another.
                Update::Batch(_) => {}
            }
            if cmaf && !self.streams[id].waiters.is_empty() {
                // A blocked request is answered as the part it waits for is published,
                // with the playlist as it is then, not after the rest of the batch: a
                // blocking reload for a segment's last part that also showed the next
                // segment begun sends hls.js (without low-latency mode) straight into a
                // reload for that segment's last part, which it gives up on after 0.8
                // target durations.
                self.wake_waiters(id, Instant::now(), false);
            }
            if !touched.contains(&id) {
                touched.push(id);
            }
        }
        for &id in &touched {
            self.wake_waiters(id, Instant::now(), false);
        }
        for id in touched {
            if self.streams[id].unflushed_since.is_none() {
                self.write_viewers(id);
            }
        }
        self.flush_held_audio(Instant::now());
    }

    /// Writes held audio of streams whose oldest held chunk is older than
    /// [`MAX_AUDIO_HOLD`] (video is sparse or stalled).
    fn flush_held_audio(&mut self, now: Instant) {
        for id in 0..self.streams.len() {
            if self.streams[id]
                .unflushed_since
                .is_some_and(|t| now.duration_since(t) >= MAX_AUDIO_HOLD)
            {
                self.streams[id].unflushed_since = None;
                self.write_viewers(id);
            }
        }
    }

    /// Lets every live viewer of stream `id` that is not blocked take what is new.
    fn write_viewers(&mut self, id: usize) {
        {
            let subs = self.streams[id].subscribers.clone();
            for token in subs {
                let blocked = self
                    .conns
                    .get(token.0)
                    .is_none_or(|c| c.blocked_since.is_some());
                if !blocked && let Flow::Close = self.drive(token) {
                    self.close(token);
                }
            }
        }
    }

    /// Answers the waiters of stream `id` whose part or playlist update now exists, and,
    /// past their deadline (or when `all`), those that waited in vain.
    fn wake_waiters(&mut self, id: usize, now: Instant, all: bool) {
        let tokens = std::mem::take(&mut self.streams[id].waiters);
        let mut still = Vec::with_capacity(tokens.len());
        for token in tokens {
            let Some(conn) = self.conns.get_mut(token.0) else {
                continue;
            };
            if let Phase::Streaming(st) = &mut conn.phase {
                let slot = &self.streams[id];
                let step = hls::stream_step(&slot.renditions, st, now);
                let keep_alive = st.keep_alive;
                match step {
                    hls::StreamStep::Wait => {
                        still.push(token);
                        continue;
                    }
                    hls::StreamStep::Send { bytes, done } => {
                        conn.out.extend(bytes);
                        if done {
                            conn.phase = Phase::Response { keep_alive };
                            conn.close_when_flushed = !keep_alive;
                        } else {
                            still.push(token);
                        }
                    }
                    hls::StreamStep::Fail(answer) => self.answer(token, answer, keep_alive, false),
                }
                if let Flow::Close = self.drive(token) {
                    self.close(token);
                    still.retain(|t| *t != token);
                }
                continue;
            }
            let Phase::Waiting(waiter) = &conn.phase else {
                continue;
            };
            let slot = &self.streams[id];
            let options = stream_hls_options(slot, &self.options.hls);
            let answer = match hls::retry(&slot.renditions, waiter, &options, now) {
                Some(answer) => answer,
                None if slot.no_renditions => hls::Answer::error_for(
                    404,
                    format!("stream {:?} has no HLS renditions", slot.name),
                ),
                None if all || now >= waiter.deadline => hls::timeout_answer(waiter),
                None => {
                    still.push(token);
                    continue;
                }
            };
            let (keep_alive, head_only) = (waiter.keep_alive, waiter.head_only);
            self.answer(token, answer, keep_alive, head_only);
            if let Flow::Close = self.drive(token) {
                self.close(token);
            }
        }
        self.streams[id].waiters.extend(still);
    }

    fn sweep(&mut self, now: Instant) {
        for slot in &self.streams {
            // Live-MKV viewers and held requests ask once and keep wanting the stream.
            if !slot.subscribers.is_empty() || !slot.waiters.is_empty() {
                slot.demand.touch();
            }
        }
        for id in 0..self.streams.len() {
            if !self.streams[id].waiters.is_empty() {
                let over = self.streams[id].over;
                self.wake_waiters(id, now, over);
            }
        }
        let mut expired = Vec::new();
        for (key, conn) in self.conns.iter() {
            let timed_out = match conn.phase {
                Phase::Request => {
                    let late =
                        now.duration_since(conn.request_started) > self.options.header_timeout;
                    // An idle keep-alive connection ends so too, and is no rejection.
                    let idle = conn.answered && conn.inbuf.is_empty();
                    if late && !idle {
                        self.counters.reject(Rejection::HeaderTimeout);
                    }
                    late
                }
                _ => {
                    let stuck = conn
                        .blocked_since
                        .is_some_and(|t| now.duration_since(t) > self.options.client_timeout);
                    if stuck {
                        self.counters.reject(Rejection::ClientTimeout);
                    }
                    stuck
                }
            };
            if timed_out {
                expired.push(Token(key));
            }
        }
        for token in expired {
            debug!("closing connection {}: timed out", token.0);
            self.close(token);
        }
    }
}

/// Points `slices` at up to `take` of `buffers`, the first from `offset` on; returns how
/// many (on the stack: one allocation less per write, and writes are most of the loop).
fn fill_slices<'a>(
    slices: &mut [IoSlice<'a>; MAX_IOVECS],
    buffers: impl Iterator<Item = &'a Bytes>,
    offset: usize,
    take: usize,
) -> usize {
    let mut n = 0;
    for (slot, b) in slices.iter_mut().zip(buffers).take(take) {
        *slot = IoSlice::new(if n == 0 { &b[offset..] } else { b });
        n += 1;
    }
    n
}

/// `writev` with MSG_MORE: the response head waits for the `sendfile` that follows, so
/// they leave in the same packets (what nginx gets from `tcp_nopush`).
#[cfg(target_os = "linux")]
fn write_more(socket: &TcpStream, slices: &[IoSlice]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: IoSlice is ABI-compatible with iovec; the message only borrows `slices`
    // for the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = slices.len() as _;
        libc::sendmsg(
            socket.as_raw_fd(),
            &msg,
            libc::MSG_MORE | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn write_more(mut socket: &TcpStream, slices: &[IoSlice]) -> io::Result<usize> {
    socket.write_vectored(slices)
}

/// Sends the next bytes of `out.file` with `sendfile` (no copy through user space),
/// advancing `out.offset`.
#[cfg(target_os = "linux")]
fn send_file(socket: &TcpStream, out: &mut FileOut) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut offset = libc::off_t::try_from(out.offset)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let count = usize::try_from(out.end - out.offset).unwrap_or(usize::MAX);
    // SAFETY: both descriptors are open for the duration of the call; `offset` is a
    // local the kernel advances.
    let n = unsafe { libc::sendfile(socket.as_raw_fd(), out.file.raw_fd(), &mut offset, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    out.offset += n as u64;
    Ok(n as usize)
}

#[cfg(not(target_os = "linux"))]
fn send_file(_socket: &TcpStream, _out: &mut FileOut) -> io::Result<usize> {
    // `SegmentFile::seal` never makes a file elsewhere.
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The longest an audio chunk waits for a video frame to be written with.
const MAX_AUDIO_HOLD: Duration = Duration::from_millis(50);

/// LL-HLS requests one stream may hold blocked at once; more get 503.
const MAX_WAITERS_PER_STREAM: usize = 4096;

/// Messages (a frame's updates, or one input read's batch of them) waiting for the loop,
/// all streams together.
const UPDATE_QUEUE: usize = 1024;

/// Pending connections the kernel may queue for us (it caps this at net.core.somaxconn).
const LISTEN_BACKLOG: i32 = 4096;

/// Unsent bytes the kernel may hold for one client before its socket stops being
/// writable. Linux grows a socket's send buffer up to `tcp_wmem` max (4 MiB): a viewer
/// that stops reading would pin that much kernel memory before a write ever blocked (and
/// `--client-timeout` started counting), 4 GiB for a thousand of them. Past this, our
/// own queue holds the rest as shared, refcounted chunks.
const MAX_UNSENT_BYTES: libc::c_int = 256 * 1024;

fn limit_unsent(socket: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = MAX_UNSENT_BYTES;
    // SAFETY: setsockopt(2) on a descriptor we own, reading one c_int we pass by pointer
    // with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// mio (like std) listens with a backlog of 128: a burst of a thousand viewers connecting
/// at once overflows it, and the overflow waits out a 1 s SYN retransmit (Icecast's
/// backlog of 5 is the extreme case of this). Listening again on a listening socket only
/// changes its backlog.
fn raise_backlog(listener: &TcpListener) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a descriptor we own; it reads no memory of ours.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a request asks for, as `/metrics` counts it, and for an HLS/DASH resource, the
/// stream it names and which kind of resource.
fn request_class(route: &Route) -> (RequestClass, Option<(&str, MediaKind)>) {
    let class = match route {
        Route::Page => RequestClass::Page,
        Route::HlsJs => RequestClass::Asset,
        Route::Metrics => RequestClass::Metrics,
        Route::Status => RequestClass::Status,
        Route::Time => RequestClass::Time,
        Route::LiveMkv { .. } => RequestClass::Live,
        Route::Ingest { .. } => RequestClass::Ingest,
        Route::HlsRedirect { .. } | Route::DashRedirect { .. } => RequestClass::Redirect,
        Route::NotFound => RequestClass::Other,
        Route::HlsMultivariant { stream } => {
            return (
                RequestClass::Playlist,
                Some((stream.as_str(), MediaKind::Playlist)),
            );
        }
        Route::DashManifest { stream } => {
            return (
                RequestClass::Manifest,
                Some((stream.as_str(), MediaKind::Manifest)),
            );
        }
        Route::HlsRendition {
            stream, resource, ..
        } => {
            let (class, kind) = match resource {
                http::HlsResource::Playlist => (RequestClass::Playlist, MediaKind::Playlist),
                http::HlsResource::Init(_) => (RequestClass::Init, MediaKind::Init),
                http::HlsResource::Segment(_) | http::HlsResource::SegmentAt(_) => {
                    (RequestClass::Segment, MediaKind::Segment)
                }
                http::HlsResource::Part(..) => (RequestClass::Part, MediaKind::Part),
            };
            return (class, Some((stream.as_str(), kind)));
        }
    };
    (class, None)
}

/// `path` with the request's query string, if it had one.
fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

fn stream_hls_options(slot: &StreamSlot, server: &HlsOptions) -> HlsOptions {
    HlsOptions {
        part_target_s: slot.part_target_s.unwrap_or(server.part_target_s),
        target_duration_s: slot.target_duration_s.unwrap_or(server.target_duration_s),
        target_known: slot.target_duration_s.is_some(),
        url_suffix: slot.url_suffix.clone(),
        ..server.clone()
    }
}

/// Applies a CMAF update to a stream's renditions.
fn apply_cmaf(slot: &mut StreamSlot, update: CmafUpdate, window: usize) {
    // Every update can change what a playlist shows (its own segments, the target
    // duration, another rendition's report).
    for r in &slot.renditions {
        r.clear_playlist_cache();
    }
    match update {
        CmafUpdate::TargetDuration(t) => slot.target_duration_s = Some(t),
        CmafUpdate::Renditions {
            list,
            part_target_s,
            init_id,
        } => {
            slot.part_target_s = Some(part_target_s);
            slot.no_renditions = false;
            let same = slot.renditions.len() == list.len()
                && slot
                    .renditions
                    .iter()
                    .zip(&list)
                    .all(|(r, (info, _))| r.info.id == info.id);
            if same {
                // Same renditions, new configuration: a new init and a discontinuity.
                for (r, (info, init)) in slot.renditions.iter_mut().zip(list) {
                    r.new_init(info, init, init_id);
                }
            } else {
                slot.renditions = list
                    .into_iter()
                    .map(|(info, init)| Rendition::new(info, init, init_id, window))
                    .collect();
            }
        }
        CmafUpdate::Part {
            rendition,
            msn,
            part,
            starts_segment,
            ends_segment,
            program_date_time_ms,
        } => {
            if let Some(r) = slot.renditions.get_mut(rendition) {
                r.push_part(msn, part, starts_segment, program_date_time_ms);
                if ends_segment {
                    r.close_segment();
                    let segments = &mut slot.stats.segments;
                    match segments.iter_mut().find(|(id, _)| *id == r.info.id) {
                        Some((_, n)) => *n += 1,
                        None => segments.push((r.info.id.clone(), 1)),
                    }
                }
            }
        }
        CmafUpdate::End => slot.renditions.iter_mut().for_each(Rendition::end),
        CmafUpdate::NoRenditions => {
            slot.no_renditions = true;
            slot.renditions.clear();
        }
    }
}

fn advance_queue(queue: &mut VecDeque<Bytes>, offset: &mut usize, mut n: usize) {
    while n > 0 {
        let Some(front) = queue.front() else { return };
        let remaining = front.len() - *offset;
        if n >= remaining {
            n -= remaining;
            queue.pop_front();
            *offset = 0;
        } else {
            *offset += n;
            n = 0;
        }
    }
}

enum LiveStep {
    /// Something (head, header) was queued in `out`.
    Queued,
    /// A 404 was queued: the stream is not WebM.
    NotWebm,
    /// The cursor has chunks to write.
    Write,
    Wait,
    End,
}

/// Decides what a live client sends next: its response head and Matroska header once the
/// stream has tracks, then the chunks of its GOP, then the next GOP the log gives it.
fn live_step(
    cursor: &mut LiveCursor,
    slot: &mut StreamSlot,
    out: &mut VecDeque<Bytes>,
) -> LiveStep {
    if !cursor.started {
        let gop = match cursor.join_seq {
            Some(seq) => slot.log.first_gop_from(seq),
            None => slot.log.start_gop(),
        };
        let Some(gop) = gop else {
            return if slot.over {
                LiveStep::End
            } else {
                LiveStep::Wait
            };
        };
        let headers = gop.headers.clone();
        if cursor.webm {
            match &headers.webm {
                Some(h) => {
                    out.push_back(response::live_head("video/webm"));
                    out.push_back(h.clone());
                }
                None => {
                    let codecs: Vec<&str> = headers.tracks.iter().map(|t| t.codec.name()).collect();
                    let msg = format!(
                        "stream {:?} is not WebM (codecs: {}); use live.mkv",
                        slot.name,
                        codecs.join(", ")
                    );
                    out.push_back(response::error(404, &msg, false, false));
                    cursor.started = true;
                    cursor.finishing = true;
                    return LiveStep::NotWebm;
                }
            }
        } else {
            out.push_back(response::live_head("video/x-matroska"));
            out.push_back(headers.mkv.clone());
        }
        cursor.started = true;
        cursor.generation = gop.generation;
        cursor.gop = Some(gop);
        return LiveStep::Queued;
    }
    if cursor.finishing && cursor.offset == 0 {
        return LiveStep::End;
    }
    let Some(gop) = cursor.gop.clone() else {
        return LiveStep::End;
    };
    if cursor.chunk < gop.len() {
        return LiveStep::Write;
    }
    match slot.log.next_after(&gop) {
        Next::Gop { gop, skipped } => {
            slot.stats.gops_skipped += skipped;
            cursor.gop = Some(gop);
            cursor.chunk = 0;
            cursor.offset = 0;
            LiveStep::Write
        }
        Next::Wait => LiveStep::Wait,
        Next::End => LiveStep::End,
    }
}
