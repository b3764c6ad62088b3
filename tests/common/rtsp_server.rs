//! A minimal RTSP/1.0 server for the RTSP ingest tests: a stand-in camera on 127.0.0.1.
//!
//! It serves one testdata Matroska file (read with matroska-demuxer) as RTP: H.264 as
//! single NAL unit and FU-A packets (RFC 6184) from the length-prefixed NAL units, H.265
//! as single NAL unit and FU packets (RFC 7798), AAC as RFC 3640 AAC-hbr (one AU per
//! packet, 13-bit sizes), G.711 raw, little-endian PCM as L16 (RFC 3551), and Motion
//! JPEG as RTP/JPEG (RFC 2435: the JPEG headers stripped, Q=255 with the quantization
//! tables in band, the scan split by fragment offset). RTP
//! timestamps come from the Matroska timestamps (90 kHz video, the sample rate for audio)
//! plus a random (or chosen) initial value, so a 32-bit wrap can be provoked; frames are
//! paced at real time times `speed`.
//!
//! Methods: OPTIONS, DESCRIBE, SETUP (interleaved TCP or UDP), PLAY (with RTP-Info),
//! GET_PARAMETER / SET_PARAMETER (keepalives), TEARDOWN; optional Digest authentication.
//! Like a camera, it drops a playing session that sends no request for its session
//! timeout. The test side can drop every connection, silence the playing sessions, and
//! read what happened (plays, keepalives, 401s).
#![allow(dead_code)]

use std::io::{Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

/// What the SDP says about H.264 parameter sets.
#[derive(Clone, Debug, PartialEq)]
pub enum SdpParameterSets {
    /// The file's own SPS and PPS.
    Correct,
    /// No sprop-parameter-sets at all.
    Missing,
    /// Someone else's (a camera whose SDP is wrong): (SPS, PPS).
    Wrong(Vec<u8>, Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The path of the presentation, e.g. `/stream`.
    pub path: String,
    /// 1.0 is real time.
    pub speed: f64,
    pub looped: bool,
    /// Digest credentials (user, password) required for every request but OPTIONS.
    pub digest: Option<(String, String)>,
    pub sdp_parameter_sets: SdpParameterSets,
    /// SPS and PPS before every H.264 keyframe, in band.
    pub in_band_parameter_sets: bool,
    /// Further media sections, as SDP text, that the client must not SETUP (404 if it does).
    pub extra_media: Vec<String>,
    /// The RTP timestamp of media time 0 for every stream; random when None.
    pub rtp_start: Option<u32>,
    /// Advertised in the Session header; a playing session with no request for this long
    /// (plus a second of grace) is dropped.
    pub session_timeout_s: u32,
    /// Largest RTP payload; bigger NAL units go as FU-A.
    pub mtu: usize,
    /// After this many frames of a session, every stream's RTP clock jumps by this many
    /// seconds (negative: backwards).
    pub clock_jump: Option<(usize, f64)>,
    /// H.265 keyframes go out as CRA pictures (open-GOP encoders, some cameras): the NAL
    /// type of IDR slices is rewritten to CRA_NUT. Not decodable, but the framing is
    /// what such a camera sends.
    pub h265_keyframes_as_cra: bool,
    /// From this far into a session on, H.264 keyframes carry these SPS and PPS in band
    /// (a camera whose resolution was changed): (after, SPS, PPS).
    pub parameter_switch: Option<(Duration, Vec<u8>, Vec<u8>)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            path: "/stream".into(),
            speed: 1.0,
            looped: true,
            digest: None,
            sdp_parameter_sets: SdpParameterSets::Correct,
            in_band_parameter_sets: false,
            extra_media: Vec::new(),
            rtp_start: None,
            session_timeout_s: 60,
            mtu: 1400,
            clock_jump: None,
            h265_keyframes_as_cra: false,
            parameter_switch: None,
        }
    }
}

#[derive(Clone, Debug)]
enum Payload {
    H264 {
        sps: Vec<u8>,
        pps: Vec<u8>,
        length_size: usize,
    },
    H265 {
        vps: Vec<u8>,
        sps: Vec<u8>,
        pps: Vec<u8>,
        length_size: usize,
    },
    Aac {
        config: Vec<u8>,
        rate: u32,
        channels: u32,
    },
    /// Sent as L16: big-endian.
    PcmLe16 { rate: u32, channels: u32 },
    G711 {
        mulaw: bool,
        rate: u32,
        channels: u32,
    },
    /// Baseline JPEG frames, sent as RTP/JPEG.
    Jpeg,
}

#[derive(Clone, Debug)]
struct MediaTrack {
    payload: Payload,
    pt: u8,
    clock: u32,
}

#[derive(Clone, Debug)]
pub struct SrcFrame {
    pub track: usize,
    pub ts_ns: i64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Media {
    tracks: Vec<MediaTrack>,
    frames: Vec<SrcFrame>,
    /// One pass of the file: where the next loop starts.
    period_ns: i64,
}

/// The SPS and PPS of an avcC, and its NAL length size.
pub fn avcc_parameter_sets(avcc: &[u8]) -> (Vec<u8>, Vec<u8>, usize) {
    let length_size = usize::from(avcc[4] & 3) + 1;
    let mut pos = 5;
    let read_sets = |pos: &mut usize, count_mask: u8| {
        let n = avcc[*pos] & count_mask;
        *pos += 1;
        let mut sets = Vec::new();
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes([avcc[*pos], avcc[*pos + 1]]));
            sets.push(avcc[*pos + 2..*pos + 2 + len].to_vec());
            *pos += 2 + len;
        }
        sets
    };
    let sps = read_sets(&mut pos, 0x1f);
    let pps = read_sets(&mut pos, 0xff);
    (sps[0].clone(), pps[0].clone(), length_size)
}

/// The VPS, SPS and PPS of an hvcC, and its NAL length size.
pub fn hvcc_parameter_sets(hvcc: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>, usize) {
    let length_size = usize::from(hvcc[21] & 3) + 1;
    let arrays = hvcc[22];
    let mut pos = 23;
    let (mut vps, mut sps, mut pps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..arrays {
        let kind = hvcc[pos] & 0x3f;
        let n = u16::from_be_bytes([hvcc[pos + 1], hvcc[pos + 2]]);
        pos += 3;
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes([hvcc[pos], hvcc[pos + 1]]));
            let nal = hvcc[pos + 2..pos + 2 + len].to_vec();
            match kind {
                32 => vps = nal,
                33 => sps = nal,
                34 => pps = nal,
                _ => {}
            }
            pos += 2 + len;
        }
    }
    (vps, sps, pps, length_size)
}

fn load(path: &Path) -> Media {
    let bytes = std::fs::read(path).expect("read testdata");
    let mut mkv = matroska_demuxer::MatroskaFile::open(Cursor::new(bytes)).expect("open mkv");
    let scale = mkv.info().timestamp_scale().get() as i64;
    let mut numbers = Vec::new();
    let mut tracks = Vec::new();
    for t in mkv.tracks() {
        let private = t.codec_private().unwrap_or_default().to_vec();
        let (payload, pt, clock) = match t.codec_id() {
            "V_MPEG4/ISO/AVC" => {
                let (sps, pps, length_size) = avcc_parameter_sets(&private);
                (
                    Payload::H264 {
                        sps,
                        pps,
                        length_size,
                    },
                    96,
                    90_000,
                )
            }
            "V_MPEGH/ISO/HEVC" => {
                let (vps, sps, pps, length_size) = hvcc_parameter_sets(&private);
                (
                    Payload::H265 {
                        vps,
                        sps,
                        pps,
                        length_size,
                    },
                    98,
                    90_000,
                )
            }
            "A_PCM/INT/LIT" => {
                let a = t.audio().expect("audio");
                assert_eq!(a.bit_depth().map(|b| b.get()), Some(16));
                let rate = a.sampling_frequency() as u32;
                (
                    Payload::PcmLe16 {
                        rate,
                        channels: a.channels().get() as u32,
                    },
                    99,
                    rate,
                )
            }
            "A_AAC" => {
                let a = t.audio().expect("audio");
                let rate = a.sampling_frequency() as u32;
                (
                    Payload::Aac {
                        config: private,
                        rate,
                        channels: a.channels().get() as u32,
                    },
                    97,
                    rate,
                )
            }
            "V_MJPEG" => (Payload::Jpeg, 26, 90_000),
            "A_MS/ACM" => {
                let a = t.audio().expect("audio");
                let rate = a.sampling_frequency() as u32;
                let mulaw = private[0] == 7;
                (
                    Payload::G711 {
                        mulaw,
                        rate,
                        channels: a.channels().get() as u32,
                    },
                    if mulaw { 0 } else { 8 },
                    rate,
                )
            }
            other => panic!("the test RTSP server cannot send {other}"),
        };
        numbers.push(t.track_number().get());
        tracks.push(MediaTrack { payload, pt, clock });
    }
    let mut frames = Vec::new();
    let mut f = matroska_demuxer::Frame::default();
    while let Ok(true) = mkv.next_frame(&mut f) {
        let track = numbers.iter().position(|n| *n == f.track).unwrap();
        frames.push(SrcFrame {
            track,
            ts_ns: f.timestamp as i64 * scale,
            keyframe: f.is_keyframe.unwrap_or(true),
            data: f.data.clone(),
        });
    }
    // A loop continues one frame interval after each track's last frame.
    let mut period_ns = 0;
    for t in 0..tracks.len() {
        let mut ts: Vec<i64> = frames
            .iter()
            .filter(|f| f.track == t)
            .map(|f| f.ts_ns)
            .collect();
        ts.sort();
        let step = ts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).min();
        if let (Some(last), Some(step)) = (ts.last(), step) {
            period_ns = period_ns.max(last + step);
        }
    }
    Media {
        tracks,
        frames,
        period_ns,
    }
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5_hex(s: &str) -> String {
    hex(&Md5::digest(s.as_bytes()))
}

/// A small PRNG: the server's random ids and initial values.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut x = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// What the tests can see and steer.
#[derive(Default)]
pub struct Stats {
    /// PLAY requests answered.
    pub plays: AtomicUsize,
    /// GET_PARAMETER/SET_PARAMETER/OPTIONS requests while playing.
    pub keepalives: AtomicUsize,
    pub unauthorized: AtomicUsize,
    /// Sessions dropped because no keepalive came in time.
    pub expired: AtomicUsize,
    /// Every request line seen.
    pub requests: Mutex<Vec<String>>,
    /// Every Transport header of a SETUP.
    pub transports: Mutex<Vec<String>>,
    /// Client connections that ended (TEARDOWN, or the client hung up).
    pub closed: AtomicUsize,
}

struct Conn {
    socket: TcpStream,
    stop: AtomicBool,
    silent: AtomicBool,
}

struct Shared {
    options: Options,
    media: Media,
    stats: Arc<Stats>,
    conns: Mutex<Vec<Arc<Conn>>>,
    shutdown: AtomicBool,
    nonce: String,
}

pub struct RtspServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// A free port on 127.0.0.1 (for a server that starts later).
pub fn reserve_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl RtspServer {
    pub fn start(file: &Path, options: Options) -> RtspServer {
        Self::start_at("127.0.0.1:0".parse().unwrap(), file, options)
    }

    pub fn start_at(addr: SocketAddr, file: &Path, options: Options) -> RtspServer {
        let listener = TcpListener::bind(addr).expect("bind the RTSP test server");
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            options,
            media: load(file),
            stats: stats.clone(),
            conns: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            nonce: format!("{:016x}", random()),
        });
        let s = shared.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(socket) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || serve(socket, s));
            }
        });
        RtspServer {
            addr,
            stats,
            shared,
            accept: Some(accept),
        }
    }

    /// `rtsp://127.0.0.1:PORT/stream`, optionally with a query.
    pub fn url(&self) -> String {
        format!("rtsp://{}{}", self.addr, self.shared.options.path)
    }

    /// Closes every connection at once, as a camera that reboots.
    pub fn drop_connections(&self) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.stop.store(true, Ordering::SeqCst);
            let _ = c.socket.shutdown(Shutdown::Both);
        }
    }

    /// The sessions playing now stop sending RTP (their connections stay up). Sessions
    /// started later send normally.
    pub fn silence_current_sessions(&self) {
        for c in self.shared.conns.lock().unwrap().iter() {
            c.silent.store(true, Ordering::SeqCst);
        }
    }

    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.drop_connections();
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop_inner();
        }
    }
}

struct Request {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How one set-up stream is sent.
enum Sink {
    Tcp {
        channel: u8,
    },
    Udp {
        socket: UdpSocket,
        /// Kept open: the client's RTCP socket is connected to it.
        _rtcp: UdpSocket,
        dest: SocketAddr,
    },
}

struct SetupStream {
    track: usize,
    sink: Sink,
    ssrc: u32,
    seq: u16,
}

fn serve(socket: TcpStream, shared: Arc<Shared>) {
    let conn = Arc::new(Conn {
        socket: socket.try_clone().unwrap(),
        stop: AtomicBool::new(false),
        silent: AtomicBool::new(false),
    });
    shared.conns.lock().unwrap().push(conn.clone());
    let writer = Arc::new(Mutex::new(socket.try_clone().unwrap()));
    let mut reader = socket;
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let session_id = format!("{:08X}", random() as u32);
    let mut streams: Vec<SetupStream> = Vec::new();
    let mut sender: Option<JoinHandle<()>> = None;
    let mut last_request = Instant::now();
    let mut playing = false;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let timeout = Duration::from_secs(u64::from(shared.options.session_timeout_s) + 1);
    'conn: loop {
        if conn.stop.load(Ordering::SeqCst) || shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        if playing && last_request.elapsed() > timeout {
            shared.stats.expired.fetch_add(1, Ordering::SeqCst);
            break;
        }
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => break,
        }
        loop {
            // Interleaved data from the client (RTCP receiver reports): skipped.
            if buf.first() == Some(&b'$') {
                if buf.len() < 4 {
                    continue 'conn;
                }
                let len = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                if buf.len() < len {
                    continue 'conn;
                }
                buf.drain(..len);
                continue;
            }
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue 'conn;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or("").split(' ');
            let req = Request {
                method: first.next().unwrap_or("").to_string(),
                uri: first.next().unwrap_or("").to_string(),
                headers: lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect(),
            };
            let body_len: usize = req
                .header("Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + body_len {
                continue 'conn;
            }
            buf.drain(..end + 4 + body_len);
            last_request = Instant::now();
            shared
                .stats
                .requests
                .lock()
                .unwrap()
                .push(format!("{} {}", req.method, req.uri));
            let cseq = req.header("CSeq").unwrap_or("0").to_string();
            let reply = |status: &str, headers: &str, body: &[u8]| {
                let mut w = writer.lock().unwrap();
                let head = format!(
                    "RTSP/1.0 {status}\r\nCSeq: {cseq}\r\nServer: muxcast-test-camera\r\n\
                     {headers}Content-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = w.write_all(head.as_bytes());
                let _ = w.write_all(body);
            };
            if req.method != "OPTIONS" && !authorized(&shared, &req) {
                shared.stats.unauthorized.fetch_add(1, Ordering::SeqCst);
                reply(
                    "401 Unauthorized",
                    &format!(
                        "WWW-Authenticate: Digest realm=\"muxcast-test\", nonce=\"{}\"\r\n",
                        shared.nonce
                    ),
                    b"",
                );
                continue;
            }
            let session_header = format!(
                "Session: {session_id};timeout={}\r\n",
                shared.options.session_timeout_s
            );
            let base = format!(
                "rtsp://{}{}/",
                conn.socket.local_addr().unwrap(),
                shared.options.path
            );
            match req.method.as_str() {
                "OPTIONS" => {
                    if playing {
                        shared.stats.keepalives.fetch_add(1, Ordering::SeqCst);
                    }
                    reply(
                        "200 OK",
                        "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, \
                         GET_PARAMETER, SET_PARAMETER\r\n",
                        b"",
                    )
                }
                "DESCRIBE" => {
                    let path = req
                        .uri
                        .split_once("://")
                        .and_then(|(_, r)| r.find('/').map(|i| &r[i..]))
                        .unwrap_or("");
                    if path.trim_end_matches('/') != shared.options.path {
                        reply("404 Not Found", "", b"");
                        continue;
                    }
                    let sdp = sdp(&shared);
                    reply(
                        "200 OK",
                        &format!("Content-Type: application/sdp\r\nContent-Base: {base}\r\n"),
                        sdp.as_bytes(),
                    );
                }
                "SETUP" => {
                    let track = req
                        .uri
                        .rsplit_once("trackID=")
                        .and_then(|(_, n)| n.parse::<usize>().ok())
                        .filter(|n| *n < shared.media.tracks.len());
                    let Some(track) = track else {
                        reply("404 Not Found", "", b"");
                        continue;
                    };
                    let transport = req.header("Transport").unwrap_or("").to_string();
                    shared
                        .stats
                        .transports
                        .lock()
                        .unwrap()
                        .push(transport.clone());
                    let ssrc = random() as u32;
                    let param = |name: &str| {
                        transport
                            .split(';')
                            .find_map(|p| p.strip_prefix(name))
                            .and_then(|v| v.split('-').next())
                            .and_then(|v| v.parse::<u16>().ok())
                    };
                    let (sink, answer) = if transport.contains("RTP/AVP/TCP") {
                        let channel = param("interleaved=").unwrap_or(2 * track as u16) as u8;
                        (
                            Sink::Tcp { channel },
                            format!(
                                "RTP/AVP/TCP;unicast;interleaved={}-{};ssrc={ssrc:08X}",
                                channel,
                                channel + 1
                            ),
                        )
                    } else if let Some(client_port) = param("client_port=") {
                        let (rtp, rtcp) = udp_pair();
                        let port = rtp.local_addr().unwrap().port();
                        let dest =
                            SocketAddr::new(conn.socket.peer_addr().unwrap().ip(), client_port);
                        (
                            Sink::Udp {
                                socket: rtp,
                                _rtcp: rtcp,
                                dest,
                            },
                            format!(
                                "RTP/AVP;unicast;client_port={}-{};\
                                 server_port={}-{};ssrc={ssrc:08X}",
                                client_port,
                                client_port + 1,
                                port,
                                port + 1
                            ),
                        )
                    } else {
                        reply("461 Unsupported Transport", "", b"");
                        continue;
                    };
                    streams.push(SetupStream {
                        track,
                        sink,
                        ssrc,
                        seq: random() as u16,
                    });
                    reply(
                        "200 OK",
                        &format!("Transport: {answer}\r\n{session_header}"),
                        b"",
                    );
                }
                "PLAY" => {
                    if streams.is_empty() || sender.is_some() {
                        reply("455 Method Not Valid in This State", "", b"");
                        continue;
                    }
                    let starts: Vec<u32> = streams
                        .iter()
                        .map(|_| shared.options.rtp_start.unwrap_or(random() as u32))
                        .collect();
                    let rtp_info: Vec<String> = streams
                        .iter()
                        .zip(&starts)
                        .map(|(s, start)| {
                            format!(
                                "url={base}trackID={};seq={};rtptime={start}",
                                s.track, s.seq
                            )
                        })
                        .collect();
                    reply(
                        "200 OK",
                        &format!(
                            "Range: npt=0.000-\r\nRTP-Info: {}\r\n{session_header}",
                            rtp_info.join(",")
                        ),
                        b"",
                    );
                    shared.stats.plays.fetch_add(1, Ordering::SeqCst);
                    playing = true;
                    let taken = std::mem::take(&mut streams);
                    let (c, w, s) = (conn.clone(), writer.clone(), shared.clone());
                    sender = Some(thread::spawn(move || send_media(c, w, s, taken, starts)));
                }
                "GET_PARAMETER" | "SET_PARAMETER" => {
                    if playing {
                        shared.stats.keepalives.fetch_add(1, Ordering::SeqCst);
                    }
                    reply("200 OK", &session_header, b"");
                }
                "TEARDOWN" => {
                    reply("200 OK", &session_header, b"");
                    break 'conn;
                }
                _ => reply("501 Not Implemented", "", b""),
            }
        }
    }
    conn.stop.store(true, Ordering::SeqCst);
    let _ = conn.socket.shutdown(Shutdown::Both);
    if let Some(t) = sender {
        let _ = t.join();
    }
    shared
        .conns
        .lock()
        .unwrap()
        .retain(|c| !Arc::ptr_eq(c, &conn));
    shared.stats.closed.fetch_add(1, Ordering::SeqCst);
}

/// Two UDP sockets on consecutive ports (RTP, RTCP).
fn udp_pair() -> (UdpSocket, UdpSocket) {
    loop {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            return (rtp, rtcp);
        }
    }
}

fn authorized(shared: &Shared, req: &Request) -> bool {
    let Some((user, password)) = &shared.options.digest else {
        return true;
    };
    let Some(auth) = req
        .header("Authorization")
        .and_then(|a| a.strip_prefix("Digest "))
    else {
        return false;
    };
    let field = |name: &str| {
        auth.split(',').find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_string())
        })
    };
    let (Some(u), Some(realm), Some(nonce), Some(uri), Some(response)) = (
        field("username"),
        field("realm"),
        field("nonce"),
        field("uri"),
        field("response"),
    ) else {
        return false;
    };
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{}:{uri}", req.method));
    u == *user && nonce == shared.nonce && response == md5_hex(&format!("{ha1}:{nonce}:{ha2}"))
}

fn sdp(shared: &Shared) -> String {
    let mut s = String::from(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=muxcast test camera\r\nc=IN IP4 0.0.0.0\r\n\
         t=0 0\r\na=control:*\r\na=range:npt=0-\r\n",
    );
    for (i, t) in shared.media.tracks.iter().enumerate() {
        match &t.payload {
            Payload::H264 { sps, pps, .. } => {
                s += &format!(
                    "m=video 0 RTP/AVP {}\r\na=rtpmap:{} H264/90000\r\n",
                    t.pt, t.pt
                );
                let sprop = match &shared.options.sdp_parameter_sets {
                    SdpParameterSets::Correct => Some((sps, pps)),
                    SdpParameterSets::Wrong(s, p) => Some((s, p)),
                    SdpParameterSets::Missing => None,
                };
                let mut fmtp = format!("packetization-mode=1;profile-level-id={}", hex(&sps[1..4]));
                if let Some((sps, pps)) = sprop {
                    fmtp += &format!(";sprop-parameter-sets={},{}", base64(sps), base64(pps));
                }
                s += &format!("a=fmtp:{} {fmtp}\r\n", t.pt);
            }
            Payload::H265 { vps, sps, pps, .. } => {
                s += &format!(
                    "m=video 0 RTP/AVP {pt}\r\na=rtpmap:{pt} H265/90000\r\n\
                     a=fmtp:{pt} sprop-vps={};sprop-sps={};sprop-pps={}\r\n",
                    base64(vps),
                    base64(sps),
                    base64(pps),
                    pt = t.pt
                );
            }
            Payload::PcmLe16 { rate, channels } => {
                s += &format!(
                    "m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} L16/{rate}/{channels}\r\n",
                    pt = t.pt
                );
            }
            Payload::Aac {
                config,
                rate,
                channels,
            } => {
                s += &format!(
                    "m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} MPEG4-GENERIC/{rate}/{channels}\r\n\
                     a=fmtp:{pt} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;\
                     indexlength=3;indexdeltalength=3;config={}\r\n",
                    hex(config),
                    pt = t.pt
                );
            }
            Payload::Jpeg => {
                s += &format!(
                    "m=video 0 RTP/AVP {pt}\r\na=rtpmap:{pt} JPEG/90000\r\n",
                    pt = t.pt
                );
            }
            Payload::G711 {
                mulaw,
                rate,
                channels,
            } => {
                let name = if *mulaw { "PCMU" } else { "PCMA" };
                s += &format!(
                    "m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/{rate}/{channels}\r\n",
                    pt = t.pt
                );
            }
        }
        s += &format!("a=control:trackID={i}\r\n");
    }
    for m in &shared.options.extra_media {
        s += m;
    }
    s
}

/// The RTP payloads of one frame: (payload, marker).
fn packetize(
    track: &MediaTrack,
    frame: &[u8],
    keyframe: bool,
    options: &Options,
    switched: bool,
) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    match &track.payload {
        Payload::H264 {
            sps,
            pps,
            length_size,
        } => {
            let mut nals: Vec<&[u8]> = Vec::new();
            match &options.parameter_switch {
                Some((_, new_sps, new_pps)) if keyframe && switched => {
                    nals.push(new_sps);
                    nals.push(new_pps);
                }
                _ if keyframe && options.in_band_parameter_sets => {
                    nals.push(sps);
                    nals.push(pps);
                }
                _ => {}
            }
            nals.extend(length_prefixed(frame, *length_size));
            for nal in nals {
                if nal.len() <= options.mtu {
                    out.push((nal.to_vec(), false));
                    continue;
                }
                // FU-A.
                let indicator = (nal[0] & 0xe0) | 28;
                let kind = nal[0] & 0x1f;
                let pieces: Vec<&[u8]> = nal[1..].chunks(options.mtu - 2).collect();
                for (i, piece) in pieces.iter().enumerate() {
                    let mut header = kind;
                    if i == 0 {
                        header |= 0x80;
                    }
                    if i == pieces.len() - 1 {
                        header |= 0x40;
                    }
                    let mut p = vec![indicator, header];
                    p.extend_from_slice(piece);
                    out.push((p, false));
                }
            }
            if let Some(last) = out.last_mut() {
                last.1 = true;
            }
        }
        Payload::H265 {
            vps,
            sps,
            pps,
            length_size,
        } => {
            let mut nals: Vec<&[u8]> = Vec::new();
            if keyframe && options.in_band_parameter_sets {
                nals.extend([vps.as_slice(), sps, pps]);
            }
            nals.extend(length_prefixed(frame, *length_size));
            let rewritten: Vec<Vec<u8>> = nals
                .iter()
                .map(|nal| {
                    let mut nal = nal.to_vec();
                    let kind = (nal[0] >> 1) & 0x3f;
                    if options.h265_keyframes_as_cra && (kind == 19 || kind == 20) {
                        nal[0] = (nal[0] & 0x81) | (21 << 1);
                    }
                    nal
                })
                .collect();
            for nal in &rewritten {
                if nal.len() <= options.mtu {
                    out.push((nal.to_vec(), false));
                    continue;
                }
                // FU: a 2-byte payload header of type 49, then S|E|type.
                let kind = (nal[0] >> 1) & 0x3f;
                let header = [(nal[0] & 0x81) | (49 << 1), nal[1]];
                let pieces: Vec<&[u8]> = nal[2..].chunks(options.mtu - 3).collect();
                for (i, piece) in pieces.iter().enumerate() {
                    let mut fu = kind;
                    if i == 0 {
                        fu |= 0x80;
                    }
                    if i == pieces.len() - 1 {
                        fu |= 0x40;
                    }
                    let mut p = vec![header[0], header[1], fu];
                    p.extend_from_slice(piece);
                    out.push((p, false));
                }
            }
            if let Some(last) = out.last_mut() {
                last.1 = true;
            }
        }
        Payload::PcmLe16 { .. } => {
            let swapped: Vec<u8> = frame.chunks(2).flat_map(|s| [s[1], s[0]]).collect();
            out.push((swapped, false));
        }
        Payload::Aac { .. } => {
            // AU-headers-length 16 bits, one AU-header: 13-bit size, 3-bit index 0.
            let size = frame.len();
            assert!(size < 8192, "AAC frame too large for sizelength=13");
            let mut p = vec![0, 16, (size >> 5) as u8, ((size & 0x1f) << 3) as u8];
            p.extend_from_slice(frame);
            out.push((p, true));
        }
        Payload::G711 { .. } => out.push((frame.to_vec(), false)),
        Payload::Jpeg => out = rtp_jpeg(frame, options.mtu),
    }
    out
}

/// What RFC 2435 sends of a baseline JPEG.
#[derive(Debug, Default)]
pub struct JpegParts {
    /// Width and height in pixels.
    pub size: (u16, u16),
    /// RTP/JPEG type: 0 for 4:2:2 (luma sampled 2x1), 1 for 4:2:0 (2x2); +64 with DRI.
    pub kind: u8,
    /// Quantization tables 0 and 1 (8-bit, 64 bytes each, zigzag order as in DQT).
    pub tables: Vec<u8>,
    pub restart_interval: Option<u16>,
    /// Everything after the SOS header: the entropy-coded scan and the EOI.
    pub scan: Vec<u8>,
}

/// Takes a baseline JPEG apart for RTP/JPEG. Panics on what RFC 2435 cannot carry.
pub fn jpeg_parts(jpeg: &[u8]) -> JpegParts {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "no SOI");
    let mut parts = JpegParts::default();
    let mut tables: [Option<&[u8]>; 4] = [None; 4];
    let mut luma_table = 0;
    let mut chroma_table = 1;
    let mut pos = 2;
    loop {
        assert_eq!(jpeg[pos], 0xFF, "no marker at {pos}");
        let marker = jpeg[pos + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        let body = &jpeg[pos + 4..pos + 2 + len];
        match marker {
            0xDB => {
                for table in body.chunks(65) {
                    assert_eq!(table[0] >> 4, 0, "16-bit quantization table");
                    tables[usize::from(table[0] & 3)] = Some(&table[1..]);
                }
            }
            0xC0 => {
                assert_eq!((body[0], body[5]), (8, 3), "not 8-bit 3-component baseline");
                parts.size = (
                    u16::from_be_bytes([body[3], body[4]]),
                    u16::from_be_bytes([body[1], body[2]]),
                );
                parts.kind = match body[7] {
                    0x21 => 0,
                    0x22 => 1,
                    other => panic!("luma sampling {other:#x}: no RTP/JPEG type"),
                };
                luma_table = usize::from(body[8]);
                chroma_table = usize::from(body[11]);
            }
            0xDD => parts.restart_interval = Some(u16::from_be_bytes([body[0], body[1]])),
            0xDA => {
                parts.scan = jpeg[pos + 2 + len..].to_vec();
                break;
            }
            _ => {}
        }
        pos += 2 + len;
    }
    if parts.restart_interval.is_some() {
        parts.kind += 64;
    }
    parts.tables = [tables[luma_table], tables[chroma_table]]
        .iter()
        .flat_map(|t| t.expect("a quantization table the frame uses"))
        .copied()
        .collect();
    parts
}

/// RFC 2435 packets of one JPEG: the main header (fragment offset, type, Q=255, size in
/// 8-pixel blocks), the restart marker header with DRI, the quantization table header
/// in the first packet; then the scan, `mtu` bytes of payload at most per packet.
fn rtp_jpeg(jpeg: &[u8], mtu: usize) -> Vec<(Vec<u8>, bool)> {
    let parts = jpeg_parts(jpeg);
    let (width, height) = parts.size;
    assert!(
        width % 8 == 0 && height % 8 == 0 && width <= 2040 && height <= 2040,
        "{width}x{height}: RTP/JPEG needs multiples of 8 up to 2040"
    );
    let mut out = Vec::new();
    let mut offset = 0usize;
    while offset < parts.scan.len() || out.is_empty() {
        let mut p = vec![0];
        p.extend_from_slice(&(offset as u32).to_be_bytes()[1..]);
        p.extend_from_slice(&[parts.kind, 255, (width / 8) as u8, (height / 8) as u8]);
        if let Some(interval) = parts.restart_interval {
            p.extend_from_slice(&interval.to_be_bytes());
            p.extend_from_slice(&[0xFF, 0xFF]);
        }
        if offset == 0 {
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&(parts.tables.len() as u16).to_be_bytes());
            p.extend_from_slice(&parts.tables);
        }
        let room = mtu.saturating_sub(p.len()).max(1);
        let piece = &parts.scan[offset..(offset + room).min(parts.scan.len())];
        p.extend_from_slice(piece);
        offset += piece.len();
        out.push((p, offset >= parts.scan.len()));
    }
    out
}

/// The NAL units of a length-prefixed access unit.
fn length_prefixed(frame: &[u8], length_size: usize) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    let mut rest = frame;
    while rest.len() > length_size {
        let len = rest[..length_size]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        nals.push(&rest[length_size..length_size + len]);
        rest = &rest[length_size + len..];
    }
    nals
}

fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(pt | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn send_media(
    conn: Arc<Conn>,
    writer: Arc<Mutex<TcpStream>>,
    shared: Arc<Shared>,
    mut streams: Vec<SetupStream>,
    starts: Vec<u32>,
) {
    let media = &shared.media;
    let options = &shared.options;
    let first_ns = media.frames.iter().map(|f| f.ts_ns).min().unwrap_or(0);
    let t0 = Instant::now();
    let mut sent = 0usize;
    let mut pass = 0i64;
    loop {
        for f in &media.frames {
            let media_ns = f.ts_ns + pass * media.period_ns;
            let due = t0
                + Duration::from_secs_f64(
                    (media_ns - first_ns).max(0) as f64 / 1e9 / options.speed,
                );
            loop {
                if conn.stop.load(Ordering::SeqCst) {
                    return;
                }
                let now = Instant::now();
                if now >= due && !conn.silent.load(Ordering::SeqCst) {
                    break;
                }
                thread::sleep(
                    (due.saturating_duration_since(now))
                        .clamp(Duration::from_millis(1), Duration::from_millis(50)),
                );
            }
            let Some(si) = streams.iter().position(|s| s.track == f.track) else {
                continue;
            };
            let track = &media.tracks[f.track];
            let mut ticks = (i128::from(media_ns) * i128::from(track.clock) / 1_000_000_000) as i64;
            if let Some((after, secs)) = options.clock_jump
                && sent >= after
            {
                ticks += (secs * f64::from(track.clock)) as i64;
            }
            let ts = starts[si].wrapping_add(ticks as u32);
            let s = &mut streams[si];
            let switched = options
                .parameter_switch
                .as_ref()
                .is_some_and(|(after, _, _)| {
                    media_ns - first_ns >= i64::try_from(after.as_nanos()).unwrap_or(i64::MAX)
                });
            for (payload, marker) in packetize(track, &f.data, f.keyframe, options, switched) {
                let packet = rtp_packet(track.pt, marker, s.seq, ts, s.ssrc, &payload);
                s.seq = s.seq.wrapping_add(1);
                let ok = match &s.sink {
                    Sink::Tcp { channel } => {
                        let mut framed = vec![b'$', *channel];
                        framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
                        framed.extend_from_slice(&packet);
                        writer.lock().unwrap().write_all(&framed).is_ok()
                    }
                    Sink::Udp { socket, dest, .. } => socket.send_to(&packet, dest).is_ok(),
                };
                if !ok {
                    return;
                }
            }
            sent += 1;
        }
        if !options.looped {
            return;
        }
        pass += 1;
    }
}
