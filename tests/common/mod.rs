//! Shared helpers for the integration tests: a real server on 127.0.0.1:0 in a thread,
//! raw HTTP clients, a chunked pusher, the built binary with its log, and
//! matroska-demuxer as the independent oracle.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use muxcast::app::spawn_stream;
use muxcast::ingest::mkv::{DemuxEvent, DemuxLimits, MkvDemuxer};
use muxcast::ingest::source::{Input, ReaderOptions};
use muxcast::media::{Frame, Track};
use muxcast::server::{ControlHandle, HlsOptions, Server, ServerOptions, ShutdownHandle};
use muxcast::stream::PublishOptions;
use muxcast::stream::cmaf::SegmenterOptions;
use muxcast::stream::live::WindowOptions;

pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: ShutdownHandle,
    /// Work for the running loop (what a configuration reload sends).
    pub control: ControlHandle,
    pub thread: Option<JoinHandle<std::io::Result<bool>>>,
}

impl TestServer {
    /// Stops the server and returns what `run` returned.
    pub fn stop(mut self) -> std::io::Result<bool> {
        self.shutdown.shutdown();
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("server thread panicked")
    }

    /// Waits for the server to exit on its own (every stream ended).
    pub fn wait(mut self, limit: Duration) -> std::io::Result<bool> {
        let t = self.thread.take().expect("joined once");
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < limit,
                "server did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        t.join().expect("server thread panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shutdown.shutdown();
            let _ = t.join();
        }
    }
}

pub struct Setup {
    pub burst_s: f64,
    pub prefill_s: f64,
    pub client_queue: usize,
    pub max_clients: usize,
    pub max_clients_per_ip: usize,
    pub client_timeout: Duration,
    pub header_timeout: Duration,
    pub keep_running: bool,
    /// RTSP inputs: reconnect after this long without media.
    pub rtsp_timeout: Duration,
    pub idle_close: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            burst_s: 0.0,
            prefill_s: 2.0,
            client_queue: 4 << 20,
            max_clients: 1024,
            max_clients_per_ip: 1024,
            client_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            keep_running: true,
            rtsp_timeout: Duration::from_secs(10),
            idle_close: Duration::from_secs(10),
        }
    }
}

pub fn start(setup: Setup, streams: Vec<(&str, Input)>) -> TestServer {
    start_with(setup, |_| {}, streams)
}

/// Like [`start`], with a last word on the server options.
pub fn start_with(
    setup: Setup,
    adjust: impl FnOnce(&mut ServerOptions) + Send + 'static,
    streams: Vec<(&str, Input)>,
) -> TestServer {
    let streams: Vec<(String, Input)> = streams
        .into_iter()
        .map(|(n, i)| (n.to_string(), i))
        .collect();
    let (tx, rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        let mut options = server_options(&setup);
        adjust(&mut options);
        let mut server = Server::bind(options)?;
        for (name, input) in streams {
            spawn_stream(
                &mut server,
                &name,
                input,
                ReaderOptions {
                    prefill: Duration::from_secs_f64(setup.prefill_s),
                    limits: DemuxLimits::default(),
                    rtsp_timeout: setup.rtsp_timeout,
                    idle_close: setup.idle_close,
                },
                PublishOptions {
                    audio_cluster_ms: 2000,
                    cmaf: Some(SegmenterOptions {
                        segment_ns: 2_000_000_000,
                        part_ns: 200_000_000,
                    }),
                },
            )?;
        }
        tx.send((
            server.local_addr(),
            server.shutdown_handle(),
            server.control_handle(),
        ))
        .unwrap();
        server.run()
    });
    let (addr, shutdown, control) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server started");
    TestServer {
        addr,
        shutdown,
        control,
        thread: Some(thread),
    }
}

/// The server options [`start`] binds with: 127.0.0.1:0 and `setup`'s limits.
pub fn server_options(setup: &Setup) -> ServerOptions {
    ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_clients: setup.max_clients,
        max_clients_per_ip: setup.max_clients_per_ip,
        client_timeout: setup.client_timeout,
        header_timeout: setup.header_timeout,
        keep_running: setup.keep_running,
        window: WindowOptions {
            burst_ns: (setup.burst_s * 1e9) as i64,
            client_queue_bytes: setup.client_queue,
        },
        handle_signals: false,
        hls: HlsOptions::default(),
        allow: Vec::new(),
    }
}

pub fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

pub fn file_input(name: &str, looped: bool) -> Input {
    Input::File {
        path: testdata(name),
        looped,
    }
}

/// Sends `request` and returns the connected socket.
pub fn send(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("send request");
    s
}

pub fn get(addr: SocketAddr, path: &str) -> TcpStream {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    )
}

/// Reads a response head; returns (status, head text, body bytes already read).
pub fn read_head(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status code");
            return (status, head, buf[i + 4..].to_vec());
        }
        let n = s.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A finite response: (status, head, body by Content-Length).
pub fn request(addr: SocketAddr, raw: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = send(addr, raw);
    let (status, head, mut body) = read_head(&mut s);
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(len) = len {
        let mut chunk = [0u8; 4096];
        while body.len() < len {
            let n = s.read(&mut chunk).expect("read body");
            assert!(n > 0, "body cut short");
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    }
    (status, head, body)
}

pub fn status_json(addr: SocketAddr) -> serde_json::Value {
    let (status, _, body) = request(
        addr,
        b"GET /status.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    serde_json::from_slice(&body).expect("status.json parses")
}

/// Polls /status.json until `pred` holds for stream `name`.
pub fn wait_for_stream(
    addr: SocketAddr,
    name: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let doc = status_json(addr);
        let s = doc["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .expect("stream listed");
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "stream {name} never reached the expected state: {s}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A frame as the oracle sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OFrame {
    /// Index of the track in the file's track list.
    pub track: usize,
    pub ts_ns: i64,
    pub keyframe: Option<bool>,
    pub data: Vec<u8>,
}

/// Reads every frame of a Matroska byte string with matroska-demuxer (an independent
/// parser). Stops quietly at a truncated end. Returns codec ids and frames.
pub fn oracle(bytes: &[u8]) -> (Vec<String>, Vec<OFrame>) {
    let mut mkv =
        matroska_demuxer::MatroskaFile::open(Cursor::new(bytes)).expect("oracle opens the stream");
    let scale = mkv.info().timestamp_scale().get() as i64;
    let tracks: Vec<(u64, String)> = mkv
        .tracks()
        .iter()
        .map(|t| (t.track_number().get(), t.codec_id().to_string()))
        .collect();
    let mut frames = Vec::new();
    let mut f = matroska_demuxer::Frame::default();
    while let Ok(true) = mkv.next_frame(&mut f) {
        let track = tracks
            .iter()
            .position(|(n, _)| *n == f.track)
            .expect("frame of a known track");
        frames.push(OFrame {
            track,
            ts_ns: f.timestamp as i64 * scale,
            keyframe: f.is_keyframe,
            data: f.data.clone(),
        });
    }
    (tracks.into_iter().map(|(_, c)| c).collect(), frames)
}

pub fn oracle_file(name: &str) -> (Vec<String>, Vec<OFrame>) {
    oracle(&std::fs::read(testdata(name)).unwrap())
}

/// Reads a live response until the server closes it or `until` says stop; returns the
/// body bytes (after the head).
pub fn read_body(s: &mut TcpStream, first: Vec<u8>, until: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut body = first;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if until(&body) {
            return body;
        }
        match s.read(&mut chunk) {
            Ok(0) => return body,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return body;
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Checks that `got` (per track, in order) is a contiguous run of `src` repeated (the
/// input may loop), comparing payload bytes and keyframe flags. Returns the number of
/// frames checked.
pub fn assert_contiguous_run(src: &[OFrame], got: &[OFrame], tracks: usize) -> usize {
    let mut checked = 0;
    for t in 0..tracks {
        let s: Vec<&OFrame> = src.iter().filter(|f| f.track == t).collect();
        let g: Vec<&OFrame> = got.iter().filter(|f| f.track == t).collect();
        if g.is_empty() {
            continue;
        }
        let start = (0..s.len())
            .find(|&i| {
                s[i].data == g[0].data
                    && (1..g.len().min(8)).all(|k| s[(i + k) % s.len()].data == g[k].data)
            })
            .unwrap_or_else(|| panic!("track {t}: first received frame not found in the source"));
        for (k, f) in g.iter().enumerate() {
            let want = s[(start + k) % s.len()];
            assert_eq!(
                f.data,
                want.data,
                "track {t}: frame {k} differs from source frame {}",
                (start + k) % s.len()
            );
            checked += 1;
        }
    }
    checked
}

/// A GET that must answer 200: its body.
pub fn get_ok(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    let (status, _, body) = request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    body
}

/// Where `needle` starts in `haystack`.
pub fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The payloads of every `mdat` in a run of ISO BMFF boxes.
pub fn mdat_payloads(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let size = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(size >= 8 && size <= bytes.len(), "box size {size}");
        if &bytes[4..8] == b"mdat" {
            out.extend_from_slice(&bytes[8..size]);
        }
        bytes = &bytes[size..];
    }
    assert!(bytes.is_empty(), "trailing bytes after the last box");
    out
}

/// The wall clock in Unix milliseconds (program date times are compared with it).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The frames of a testdata Matroska file as muxcast's own demuxer reads them, with its
/// tracks: what a test pusher re-muxes and sends.
pub fn demux_testdata(name: &str) -> (Vec<Track>, Vec<Frame>) {
    let mut demux = MkvDemuxer::new(Default::default());
    demux.feed(&std::fs::read(testdata(name)).unwrap());
    let (mut tracks, mut frames) = (Vec::new(), Vec::new());
    loop {
        match demux.next_event() {
            Ok(Some(DemuxEvent::Tracks(t))) => tracks = t,
            Ok(Some(DemuxEvent::Frame(f))) => frames.push(f),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    while let Ok(Some(e)) = demux.finish() {
        if let DemuxEvent::Frame(f) = e {
            frames.push(f);
        }
    }
    (tracks, frames)
}

/// `bytes` as one chunk of the chunked transfer coding: length in hex, CRLF, the bytes,
/// CRLF.
pub fn http_chunk(bytes: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", bytes.len()).into_bytes();
    c.extend_from_slice(bytes);
    c.extend_from_slice(b"\r\n");
    c
}

/// Where the body of a request or response goes: raw, or with chunked transfer coding.
pub struct BodyOut {
    pub s: TcpStream,
    pub chunked: bool,
}

impl BodyOut {
    /// A pusher: connects to `addr` and sends the head of `PUT /NAME/ingest` with chunked
    /// transfer coding (in one write); the Matroska stream follows through [`Self::send`].
    pub fn push_chunked(addr: SocketAddr, name: &str) -> BodyOut {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let head =
            format!("PUT /{name}/ingest HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        BodyOut { s, chunked: true }
    }

    /// Sends `bytes` (as one chunk when chunked) in one write.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.chunked {
            self.s.write_all(&http_chunk(bytes))
        } else {
            self.s.write_all(bytes)
        }
    }

    /// Ends the body: the last (empty) chunk when chunked; nothing to send otherwise.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.chunked {
            self.s.write_all(b"0\r\n\r\n")
        } else {
            Ok(())
        }
    }
}

/// The built muxcast binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_muxcast");

/// Starts the binary with `args` and `RUST_LOG=rust_log` (stdin and stdout closed); its
/// log (stderr) comes line by line through the channel, which ends when the process does.
pub fn spawn_muxcast<S: AsRef<OsStr>>(
    args: impl IntoIterator<Item = S>,
    rust_log: &str,
) -> (Child, Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start muxcast");
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The binary with a config file, killed if a test fails while it runs.
pub struct Muxcast {
    child: Child,
    stderr: Receiver<String>,
    log: Vec<String>,
}

impl Muxcast {
    pub fn start(config: &Path) -> Muxcast {
        let (child, stderr) = spawn_muxcast([Path::new("--config"), config], "info");
        Muxcast {
            child,
            stderr,
            log: Vec::new(),
        }
    }

    /// The addresses of the first `n` "listening on http://ADDR/" lines, in log order.
    pub fn listening(&mut self, n: usize) -> Vec<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut addrs = Vec::new();
        while addrs.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stderr
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {n} listening lines: {:#?}", self.log));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split('/').next().unwrap();
                addrs.push(addr.parse().unwrap());
            }
            self.log.push(line);
        }
        addrs
    }

    /// Waits for the process to exit; its exit code and the rest of its log.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut log = std::mem::take(&mut self.log);
                while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
                    log.push(line);
                }
                return (status.code(), log);
            }
            assert!(
                Instant::now() < deadline,
                "muxcast still running: {:#?}",
                self.log
            );
            while let Ok(line) = self.stderr.try_recv() {
                self.log.push(line);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(&self) {
        sigterm(&self.child);
    }

    /// SIGHUP: reload the configuration file.
    pub fn hangup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(r, 0);
    }

    /// The next log line containing `needle` (within 10 s); the lines before it are kept.
    pub fn line_with(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stderr
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {needle:?}: {:#?}", self.log));
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Muxcast {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends SIGTERM to a process the test started.
pub fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0);
}
