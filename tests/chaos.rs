//! Input chaos (issue 6): pushers that drop every second mid-cluster, garbage between good
//! pushes, pushers that change tracks, and an HTTP-pulled input whose server drops, 404s
//! and sends garbage. After every fault the stream must take good input again, live-MKV
//! viewers must recover (frames checked byte for byte against the source), HLS must go on
//! with a discontinuity per reconnect and program date times on the wall clock, nothing
//! may panic, and each bad input must leave one clear log line.
//!
//! Bounded: every read has a timeout, every wait a deadline; about 15 s of wall time.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use muxcast::ingest::source::Input;
use muxcast::media::{Frame, Track, TrackKind};
use muxcast::mux::mkv::{ClusterWriter, DocType, header, put_cluster_start, put_simple_block};

// ---------------------------------------------------------------------------------------
// Log and panic capture: the server logs through the `log` facade; the test binary is the
// process, so a logger installed here sees every line the server writes.

static LOG: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOG.lock().unwrap().push((r.level(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = thread::current().name().unwrap_or("?").to_string();
            if let Ok(mut p) = PANICS.lock() {
                p.push((name, info.to_string()));
            }
            previous(info);
        }));
    });
}

/// Captured lines that contain `needle`.
fn log_lines(needle: &str) -> Vec<(log::Level, String)> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l.contains(needle))
        .cloned()
        .collect()
}

fn has_log(needle: &str) -> bool {
    LOG.lock().unwrap().iter().any(|(_, l)| l.contains(needle))
}

/// Panics in the reader threads of these streams (named `in-NAME`) or in this file's
/// helper threads for them (`t-NAME-...`).
fn assert_no_panics(streams: &[&str]) {
    let p = PANICS.lock().unwrap();
    let ours: Vec<&(String, String)> = p
        .iter()
        .filter(|(t, _)| {
            streams
                .iter()
                .any(|s| *t == format!("in-{s}") || t.starts_with(&format!("t-{s}-")))
        })
        .collect();
    assert!(ours.is_empty(), "panics: {ours:?}");
}

/// Polls `ok` until it holds; fails after `limit` with `what`.
fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// Sources: a testdata file demuxed once, re-muxed by our own live writer in pieces.

struct Source {
    tracks: Vec<Track>,
    head: Bytes,
    frames: Vec<Frame>,
    /// Indices of the primary video track's keyframes (in file order).
    keys: Vec<usize>,
}

fn load(name: &str) -> Source {
    let (tracks, frames) = demux_testdata(name);
    let video = tracks.iter().position(|t| t.kind() == TrackKind::Video);
    let keys = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| Some(f.track) == video && f.keyframe)
        .map(|(i, _)| i)
        .collect();
    Source {
        head: header(&tracks, DocType::Matroska),
        tracks,
        frames,
        keys,
    }
}

fn codec_ids(src: &Source) -> Vec<String> {
    src.tracks.iter().map(|t| t.codec_id.clone()).collect()
}

/// One frame as a live-MKV chunk of a pusher's writer.
struct Chunk {
    track: usize,
    /// When to send it, from the start of the run (its presentation time).
    due_ms: i64,
    bytes: Bytes,
    data: Bytes,
}

/// Frames `from..to` of `src` through a fresh writer (a pusher that just (re)started),
/// re-timed so that frame `from` is at `at_ms` (a new input clock per connection).
fn chunks(src: &Source, from: usize, to: usize, at_ms: i64) -> Vec<Chunk> {
    let mut writer = ClusterWriter::new(&src.tracks, 1000);
    let base = src.frames[from].pts;
    src.frames[from..to]
        .iter()
        .filter_map(|f| {
            let rel = (f.pts - base).div_euclid(1_000_000);
            let w = writer.write(f.track, rel + at_ms, f.keyframe, &f.data)?;
            Some(Chunk {
                track: f.track,
                due_ms: rel.max(0),
                bytes: w.bytes,
                data: f.data.clone(),
            })
        })
        .collect()
}

/// Like [`chunks`], preceded by a Cluster holding the `lead` audio frames that come just
/// before frame `from` in the file: a pusher whose muxer starts with audio, so that the
/// server gets audio before the first keyframe of the new connection.
fn chunks_with_lead_audio(
    src: &Source,
    from: usize,
    to: usize,
    at_ms: i64,
    lead: usize,
) -> Vec<Chunk> {
    let audio: Vec<usize> = (0..from)
        .rev()
        .filter(|&i| src.tracks[src.frames[i].track].kind() == TrackKind::Audio)
        .take(lead)
        .collect();
    let base = src.frames[from].pts;
    let ms = |i: usize| (src.frames[i].pts - base).div_euclid(1_000_000) + at_ms;
    let first = *audio.last().expect("audio before the keyframe");
    let cluster_ms = ms(first);
    let mut out = Vec::new();
    for (k, &i) in audio.iter().rev().enumerate() {
        let f = &src.frames[i];
        let mut b = BytesMut::new();
        if k == 0 {
            put_cluster_start(&mut b, cluster_ms as u64);
        }
        put_simple_block(&mut b, f.track, (ms(i) - cluster_ms) as i16, true, &f.data);
        out.push(Chunk {
            track: f.track,
            due_ms: 0,
            bytes: b.freeze(),
            data: f.data.clone(),
        });
    }
    out.extend(chunks(src, from, to, at_ms));
    out
}

type Expected = Vec<(usize, Bytes)>;

fn expect(chunks: &[Chunk]) -> Expected {
    chunks.iter().map(|c| (c.track, c.data.clone())).collect()
}

/// What this file's pushers and origin do with a body beyond sending it (`BodyOut`,
/// tests/common: raw, or with chunked transfer).
impl BodyOut {
    /// Sends `chunks`, at real time from `t0` when `pace`.
    fn feed(&mut self, chunks: &[Chunk], t0: Instant, pace: bool) -> io::Result<()> {
        for c in chunks {
            if pace {
                let due = t0 + Duration::from_millis(c.due_ms as u64);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(d);
                }
            }
            self.send(&c.bytes)?;
        }
        Ok(())
    }

    /// Sends the first half of `chunk`'s bytes (a block cut off mid-write) as raw bytes,
    /// or inside a chunk that announces the whole length.
    fn send_half(&mut self, chunk: &Chunk) -> io::Result<()> {
        let half = &chunk.bytes[..chunk.bytes.len() / 2];
        if self.chunked {
            write!(self.s, "{:x}\r\n", chunk.bytes.len())?;
        }
        self.s.write_all(half)
    }

    /// Closes with a RST instead of a FIN (SO_LINGER 0): a pusher that crashed.
    fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a correctly sized option value.
        let r = unsafe {
            libc::setsockopt(
                self.s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_LINGER");
    }
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    Chunked,
    /// Content-Length of this many bytes.
    Length(u64),
    /// Neither: the body ends when the pusher closes.
    UntilClose,
}

/// A pusher's connection after the server took it.
struct Pusher {
    out: BodyOut,
    peer: String,
    /// From the first connection attempt to being taken (409s included).
    waited: Duration,
    /// An answer that came before we knew it was taken (an empty body is over at once).
    early: Vec<u8>,
}

/// Connects a pusher to /NAME/ingest and waits until the stream's reader took it (its
/// "pusher ADDR connected" log line). A 409 (the reader thread has not yet seen the last
/// pusher go) is retried for up to `limit`; returns the pusher and the 409s it got.
fn connect_pusher(
    addr: SocketAddr,
    name: &str,
    framing: Framing,
    limit: Duration,
) -> (Pusher, u32) {
    let start = Instant::now();
    let mut conflicts = 0;
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let peer = s.local_addr().unwrap().to_string();
        let framing_head = match framing {
            Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_string(),
            Framing::Length(n) => format!("Content-Length: {n}\r\n"),
            Framing::UntilClose => String::new(),
        };
        write!(
            s,
            "PUT /{name}/ingest HTTP/1.1\r\nHost: t\r\n{framing_head}\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let taken = format!("pusher {peer} connected");
        let mut answer = Vec::new();
        loop {
            if has_log(&taken) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let chunked = matches!(framing, Framing::Chunked);
                return (
                    Pusher {
                        out: BodyOut { s, chunked },
                        peer,
                        waited: start.elapsed(),
                        early: answer,
                    },
                    conflicts,
                );
            }
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("pusher {peer}: {e}"),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && !answer.starts_with(b"HTTP/1.1 409") {
                // Answered before we saw the reader take it: it must have taken it.
                wait_until(Duration::from_secs(1), "the pusher's log line", || {
                    has_log(&taken)
                });
                continue;
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "{name}: pusher not taken within {limit:?}"
            );
        }
        let text = String::from_utf8_lossy(&answer).to_string();
        assert!(
            text.starts_with("HTTP/1.1 409"),
            "{name}: a new pusher was answered {text:?}"
        );
        conflicts += 1;
        assert!(
            start.elapsed() < limit,
            "{name}: still 409 after {limit:?} ({conflicts} tries): {text:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

impl Pusher {
    /// Ends the body properly and returns the server's answer (status, body).
    fn finish(mut self) -> (u16, String) {
        if self.out.chunked {
            let _ = self.out.s.write_all(b"0\r\n\r\n");
        } else {
            let _ = self.out.s.shutdown(std::net::Shutdown::Write);
        }
        read_answer(&mut self.out.s, self.early)
    }
}

/// Reads an HTTP answer to the end of the connection: (status, body).
fn read_answer(s: &mut TcpStream, early: Vec<u8>) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = early;
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------
// Viewers: a live-MKV GET read in a thread into a shared buffer.

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The server closed the connection (FIN).
    Closed,
    /// Still open when we stopped reading.
    Open,
    Error(String),
}

struct Viewer {
    body: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(String, End)>,
}

fn watch(addr: SocketAddr, path: &str) -> Viewer {
    let body = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut s = get(addr, path);
    let (b, st) = (body.clone(), stop.clone());
    let stream = path.split('/').nth(1).unwrap_or("?");
    let thread = thread::Builder::new()
        .name(format!("t-{stream}-viewer"))
        .spawn(move || {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut raw = Vec::new();
            let mut head = None;
            let mut buf = vec![0u8; 64 * 1024];
            let end = loop {
                if st.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break End::Open;
                }
                match s.read(&mut buf) {
                    Ok(0) => break End::Closed,
                    Ok(n) => {
                        if head.is_some() {
                            b.lock().unwrap().extend_from_slice(&buf[..n]);
                        } else {
                            raw.extend_from_slice(&buf[..n]);
                            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                                head = Some(String::from_utf8_lossy(&raw[..i]).to_string());
                                b.lock().unwrap().extend_from_slice(&raw[i + 4..]);
                            }
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => break End::Error(e.to_string()),
                }
            };
            (head.unwrap_or_default(), end)
        })
        .unwrap();
    Viewer { body, stop, thread }
}

impl Viewer {
    fn len(&self) -> usize {
        self.body.lock().unwrap().len()
    }

    /// Waits until the bytes received after `from` contain `needle`.
    fn wait_for(&self, from: usize, needle: &[u8], limit: Duration, what: &str) {
        wait_until(limit, what, || {
            let b = self.body.lock().unwrap();
            b.len() > from
                && position(&b[from.saturating_sub(needle.len() - 1)..], needle).is_some()
        });
    }

    fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops reading (if it still is): (response head, body, how it ended).
    fn join(self) -> (String, Vec<u8>, End) {
        self.stop.store(true, Ordering::SeqCst);
        let (head, end) = self.thread.join().expect("viewer thread");
        let body = std::mem::take(&mut *self.body.lock().unwrap());
        (head, body, end)
    }
}

/// Walks a live-MKV body element by element (descending into Segment and Cluster) and
/// says whether it ends exactly at an element's end: a clean end of stream, not a cut.
fn ends_cleanly(body: &[u8]) -> Result<usize, String> {
    fn vint(b: &[u8], keep_marker: bool) -> Option<(u64, usize, bool)> {
        let first = *b.first()?;
        let len = first.leading_zeros() as usize + 1;
        if len > 8 || b.len() < len {
            return None;
        }
        let mut v = if keep_marker {
            u64::from(first)
        } else {
            u64::from(first) & (0xFF >> len)
        };
        for &x in &b[1..len] {
            v = (v << 8) | u64::from(x);
        }
        let all_ones = !keep_marker && v == (1u64 << (7 * len)) - 1;
        Some((v, len, all_ones))
    }
    let mut pos = 0;
    let mut elements = 0;
    while pos < body.len() {
        let (id, id_len, _) =
            vint(&body[pos..], true).ok_or(format!("cut inside an ID at {pos}"))?;
        let (size, size_len, unknown) =
            vint(&body[pos + id_len..], false).ok_or(format!("cut inside a size at {pos}"))?;
        pos += id_len + size_len;
        elements += 1;
        if id == 0x1853_8067 || id == 0x1F43_B675 {
            continue;
        }
        if unknown {
            return Err(format!("unknown size on element 0x{id:X}"));
        }
        pos = pos
            .checked_add(size as usize)
            .ok_or("size overflow".to_string())?;
    }
    if pos == body.len() {
        Ok(elements)
    } else {
        Err(format!(
            "the last element ends at {pos}, past the body's {} bytes",
            body.len()
        ))
    }
}

/// Checks what a viewer got: its codecs, and every frame in order, byte for byte.
fn assert_frames(body: &[u8], codecs: &[String], want: &Expected, what: &str) {
    let (got_codecs, got) = oracle(body);
    assert_eq!(got_codecs, codecs, "{what}: codecs");
    let got: Expected = got
        .into_iter()
        .map(|f| (f.track, Bytes::from(f.data)))
        .collect();
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: frame {i} (track {}) differs from the source frame sent there (track {}); \
             got {} frames, {} sent",
            got[i].0,
            want[i].0,
            got.len(),
            want.len()
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: every frame sent arrives, and nothing else"
    );
}

fn stream_status(addr: SocketAddr, name: &str) -> serde_json::Value {
    wait_for_stream(addr, name, Duration::from_secs(1), |_| true)
}

/// A media playlist if the server answers within `limit` (a playlist whose stream has
/// no target duration yet is held, and answered 503 only after three target durations).
fn try_media_playlist(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> Option<(String, m3u8_rs::MediaPlaylist)> {
    let mut s = get(addr, path);
    s.set_read_timeout(Some(limit)).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if all.is_empty() {
                    return None;
                }
                break;
            }
            Err(e) => panic!("{path}: {e}"),
        }
        let text = String::from_utf8_lossy(&all);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("Content-Length");
            if body.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&all).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {text}");
    match m3u8_rs::parse_playlist_res(body.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => Some((body.to_string(), p)),
        _ => panic!("{path}: not a media playlist:\n{body}"),
    }
}

/// EXT-X-DISCONTINUITY-SEQUENCE plus the EXT-X-DISCONTINUITY tags listed: the
/// discontinuities the playlist accounts for (the first listed segment's own, if any, is
/// carried by neither).
fn discontinuities(text: &str) -> u64 {
    let sequence = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
        .map_or(0, |v| v.parse().unwrap());
    sequence
        + text
            .lines()
            .filter(|l| *l == "#EXT-X-DISCONTINUITY")
            .count() as u64
}

/// How far before now the newest complete segment of a playlist ends (ms).
fn newest_segment_lag_ms(p: &m3u8_rs::MediaPlaylist) -> i64 {
    let last = p.segments.last().expect("a complete segment");
    let pdt = last
        .program_date_time
        .expect("PROGRAM-DATE-TIME")
        .timestamp_millis();
    unix_ms() - (pdt + (last.duration * 1000.0) as i64)
}

/// Unix ms of an RFC 3339 date as the playlists write it (`2026-11-27T19:34:35.123Z`).
fn parse_date_ms(d: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| d[r].parse::<i64>().unwrap();
    assert!(d.len() == 24 && d.ends_with('Z'), "date {d:?}");
    let (y, m, day) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

/// How long ago the newest segment listed (complete or in progress) began, by its
/// program date time (ms).
fn newest_date_age_ms(text: &str) -> i64 {
    let d = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .next_back()
        .expect("a PROGRAM-DATE-TIME");
    unix_ms() - parse_date_ms(d)
}

/// Program date times follow the segment durations, and jump by at most `max_gap_ms`
/// at a discontinuity (the outage). They may step back a little there: the wall clock is
/// anchored at the arrival of the first frame after the outage, and a pusher that sends
/// audio from before its first keyframe together with it (as muxers do) dates that
/// segment up to that audio's lead (~64 ms here) late, so the next one overlaps it.
/// Returns the jumps at the discontinuities.
fn check_dates(p: &m3u8_rs::MediaPlaylist, max_gap_ms: i64, what: &str) -> Vec<i64> {
    let date = |s: &m3u8_rs::MediaSegment| s.program_date_time.unwrap().timestamp_millis();
    let jumps: Vec<(bool, i64, &str)> = p
        .segments
        .windows(2)
        .map(|w| {
            let end = date(&w[0]) + (w[0].duration * 1000.0) as i64;
            (w[1].discontinuity, date(&w[1]) - end, w[1].uri.as_str())
        })
        .collect();
    for (discontinuity, jump, uri) in &jumps {
        let range = if *discontinuity {
            -100..=max_gap_ms
        } else {
            -5..=5
        };
        assert!(
            range.contains(jump),
            "{what}: program date time jumps {jump} ms before {uri} (discontinuity: \
             {discontinuity}); every jump: {jumps:?}"
        );
    }
    jumps.into_iter().filter(|j| j.0).map(|j| j.1).collect()
}

/// Deterministic bytes (xorshift64).
struct Rng(u64);

impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 32) as u8
            })
            .collect()
    }

    /// Garbage that holds no Cluster or EBML ID (so a demuxer cannot resync inside it)
    /// and starts with `42 01 85`: not an EBML header, and, after a header, a 2-byte ID
    /// no Segment has, with a valid size.
    fn garbage(&mut self, n: usize) -> Vec<u8> {
        let mut g = self.bytes(n);
        g[..3].copy_from_slice(&[0x42, 0x01, 0x85]);
        for w in 0..g.len().saturating_sub(3) {
            if g[w..w + 4] == [0x1F, 0x43, 0xB6, 0x75] || g[w..w + 4] == [0x1A, 0x45, 0xDF, 0xA3] {
                g[w] = 0;
            }
        }
        g
    }
}

// ---------------------------------------------------------------------------------------

/// A pusher that drops every ~1.2 s in the middle of a Cluster (half a block sent), in
/// every framing, with a FIN or a RST, and comes straight back with the same tracks and a
/// new clock. The viewer that was there from the start keeps its connection and gets
/// every whole frame that was sent, byte for byte; the stream is live again after every
/// reconnect; HLS marks each reconnect with a discontinuity and keeps its dates on the
/// wall clock, and its playlists answer while the pusher keeps dropping.
#[test]
fn a_pusher_that_drops_every_second_mid_cluster_is_taken_back_every_time() {
    init();
    const NAME: &str = "drop";
    const CYCLES: usize = 8;
    let server = start(Setup::default(), vec![(NAME, Input::Push)]);
    let addr = server.addr;
    let src = load("h264_aac.mkv");
    assert!(src.keys.len() >= 9);
    let viewer = watch(addr, &format!("/{NAME}/live.mkv"));
    wait_for_stream(addr, NAME, Duration::from_secs(5), |s| s["clients"] == 1);
    let playlist = format!("/{NAME}/v0/index.m3u8");

    let mut want: Expected = Vec::new();
    let mut conflicts = 0;
    let mut peers = Vec::new();
    let mut longest_wait = Duration::ZERO;
    let mut last_msn = 0u64;
    let mut lags = Vec::new();
    // Reconnects at which the media playlist did not answer within 1 s.
    let mut no_playlist = Vec::new();
    for cycle in 0..CYCLES {
        let framing = match cycle % 3 {
            0 => Framing::Chunked,
            1 => Framing::Length(1 << 30),
            _ => Framing::UntilClose,
        };
        let rst = cycle % 4 == 3;
        let (mut p, c) = connect_pusher(addr, NAME, framing, Duration::from_secs(2));
        conflicts += c;
        longest_wait = longest_wait.max(p.waited);
        peers.push(p.peer.clone());
        // A whole GOP, then the next GOP's keyframe and four frames, then half a block.
        let g = (2 * cycle) % 8;
        let next_key = src.keys[g + 1];
        // Even cycles restart the clock at 1 s (an encoder restart), odd ones jump it
        // far ahead (a wall-clock timestamped source).
        let at_ms = if cycle % 2 == 0 {
            1000
        } else {
            3_600_000 + 7_000 * cycle as i64
        };
        // Odd cycles start with audio, as a muxer that starts its first Cluster with
        // the audio it has before the keyframe.
        let lead = if cycle % 2 == 1 { 3 } else { 0 };
        let run = if lead > 0 {
            chunks_with_lead_audio(&src, src.keys[g], next_key + 6, at_ms, lead)
        } else {
            chunks(&src, src.keys[g], next_key + 6, at_ms)
        };
        let (whole, cut) = run.split_at(run.len() - 1);
        let frames_before = want.len() as u64;
        let from = viewer.len();
        let t0 = Instant::now();
        p.out.send(&src.head).unwrap();
        p.out.feed(&whole[..lead + 1], t0, true).unwrap();
        // Live again, with this pusher's frames (not a stale state of the last one).
        wait_for_stream(addr, NAME, Duration::from_secs(2), |s| {
            s["state"] == "live" && s["frames"].as_u64().unwrap() > frames_before
        });
        // The viewer that was there all along gets this pusher's first keyframe.
        viewer.wait_for(
            from,
            &whole[lead].data,
            Duration::from_secs(2),
            &format!("cycle {cycle}: the viewer gets the new pusher's keyframe"),
        );
        if cycle >= 1 {
            // HLS: the playlist goes on, and the newest segment (the last pusher's, ended
            // by this reconnect) is dated on the wall clock.
            match try_media_playlist(addr, &playlist, Duration::from_secs(1)) {
                Some((text, p)) => {
                    let msn = p.media_sequence + p.segments.len() as u64;
                    assert!(msn > last_msn, "cycle {cycle}: the playlist grows:\n{text}");
                    last_msn = msn;
                    lags.push(newest_segment_lag_ms(&p));
                    let age = newest_date_age_ms(&text);
                    assert!(
                        (0..1500).contains(&age),
                        "cycle {cycle}: the new pusher's segment is dated {age} ms ago"
                    );
                }
                None => no_playlist.push(cycle),
            }
        }
        p.out.feed(&whole[lead + 1..], t0, true).unwrap();
        p.out.send_half(cut.last().unwrap()).unwrap();
        want.extend(expect(whole));
        if rst {
            // A RST may discard what the server has not read yet: let it read all first.
            let total = want.len() as u64;
            wait_for_stream(addr, NAME, Duration::from_secs(2), |s| {
                s["frames"].as_u64() == Some(total)
            });
            p.out.reset();
        } else {
            drop(p);
        }
    }
    let segments_during_drops = stream_status(addr, NAME)["segments"].clone();

    // Then a pusher that stays 2.3 s: a segment is cut at a keyframe 2 s in.
    let (mut p, c) = connect_pusher(addr, NAME, Framing::Chunked, Duration::from_secs(2));
    conflicts += c;
    let run = chunks(&src, src.keys[0], src.keys[2] + 8, 1000);
    p.out.send(&src.head).unwrap();
    p.out.feed(&run, Instant::now(), true).unwrap();
    want.extend(expect(&run));
    let (text, p_list) = try_media_playlist(addr, &playlist, Duration::from_secs(3))
        .expect("the media playlist once a segment was cut at a keyframe");
    // The window holds every pusher's segments, one discontinuity per reconnect.
    let d = discontinuities(&text);
    assert!(
        d == CYCLES as u64 || d == CYCLES as u64 - 1,
        "{d} discontinuities for {CYCLES} reconnects:\n{text}"
    );
    let jumps = check_dates(&p_list, 1000, "drop");
    println!("program date time jumps at the reconnects: {jumps:?} ms");
    let age = newest_date_age_ms(&text);
    assert!(
        (0..2500).contains(&age),
        "the newest segment is dated {age} ms ago:\n{text}"
    );
    println!("newest segment ended this long before now at each reconnect (ms): {lags:?}");
    assert!(
        lags.iter().all(|l| (-100..3000).contains(l)),
        "program date times off the wall clock: {lags:?}"
    );

    // Every whole frame, from every pusher, reached the viewer, which is still connected.
    let total = want.len() as u64;
    wait_for_stream(addr, NAME, Duration::from_secs(2), |s| {
        s["frames"].as_u64() == Some(total)
    });
    assert!(!viewer.is_finished(), "the viewer lost its connection");
    // New tracks end it cleanly, so it can be read to the end.
    p.out.send(&load("opus_only.webm").head).unwrap();
    wait_until(Duration::from_secs(5), "the old viewer's end", || {
        viewer.is_finished()
    });
    let (head, body, end) = viewer.join();
    drop(p);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(end, End::Closed);
    ends_cleanly(&body).unwrap();
    assert_frames(
        &body,
        &codec_ids(&src),
        &want,
        "the viewer of all 9 pushers",
    );
    println!(
        "{CYCLES} drops: the viewer got all {} frames; {conflicts} transient 409s, a \
         reconnecting pusher was taken within {longest_wait:?}",
        want.len()
    );

    // One line per dropped pusher: a clear reason for the cut bodies, "finished" for
    // the ones whose body ends at the close. No errors.
    for (cycle, peer) in peers.iter().enumerate() {
        let lines: Vec<(log::Level, String)> = log_lines(&format!("pusher {peer}"))
            .into_iter()
            .filter(|(_, l)| !l.ends_with(" connected"))
            .collect();
        assert_eq!(lines.len(), 1, "cycle {cycle}: one line: {lines:#?}");
        let (lvl, l) = &lines[0];
        let reason = match (cycle % 3, cycle % 4 == 3) {
            (_, true) => "read error: Connection reset by peer",
            (0, _) => "read error: body ended inside a chunk",
            (1, _) => "read error: body ended ",
            _ => "finished",
        };
        let level = if reason == "finished" {
            log::Level::Info
        } else {
            log::Level::Warn
        };
        assert!(
            *lvl == level
                && l.contains(reason)
                && l.starts_with(&format!("stream {NAME} (push): ")),
            "cycle {cycle}: {lvl} {l:?}, expected {level} {reason:?}"
        );
    }
    assert!(log_lines(NAME).iter().all(|(l, _)| *l > log::Level::Error));
    assert_no_panics(&[NAME]);
    assert!(server.stop().is_ok());

    // Last, so that everything above is checked too: HLS must not be unavailable while a
    // pusher keeps dropping before its first segment reaches the segment duration.
    assert!(
        no_playlist.is_empty(),
        "the media playlist was held without an answer for 1 s at reconnects {no_playlist:?} \
         of {}: the stream's target duration is only chosen when a segment is cut at a \
         keyframe after --segment-duration (2 s); segments ended by an outage \
         (Publisher::resume_after_gap -> CmafPipeline::finish) never choose it, so while a \
         pusher drops every ~1.2 s no media playlist is served ({segments_during_drops} \
         segments were made)",
        CYCLES - 1
    );
}

/// Good pushes with garbage between them: random bytes, a cut EBML header, cut Tracks,
/// a header followed by garbage, an EBML header and a block claiming absurd sizes, a bad
/// chunked framing, an empty body, a codec muxcast does not carry. Each bad pusher gets
/// a 400 with the reason or (when its header was good) a resync, and one log line; the
/// next good pusher is taken at once, the stream is live again and the viewer goes on.
#[test]
fn garbage_between_good_pushes_gets_one_clear_line_each_and_the_stream_goes_on() {
    init();
    const NAME: &str = "junk";
    let server = start(Setup::default(), vec![(NAME, Input::Push)]);
    let addr = server.addr;
    let src = load("h264_aac.mkv");
    let viewer = watch(addr, &format!("/{NAME}/live.mkv"));
    wait_for_stream(addr, NAME, Duration::from_secs(5), |s| s["clients"] == 1);
    let label = format!("stream {NAME} (push)");

    let mut rng = Rng(0x2545_F491_4F6C_DD1D);

    let mut want: Expected = Vec::new();
    let mut good_gop = 0;
    // A good pusher: one GOP unpaced, live, seen by the viewer, then a proper end (204).
    let mut good = |want: &mut Expected, what: &str| {
        let (mut p, conflicts) =
            connect_pusher(addr, NAME, Framing::Chunked, Duration::from_secs(1));
        assert_eq!(
            conflicts, 0,
            "{what}: 409 after the last pusher had its answer"
        );
        let run = chunks(&src, src.keys[good_gop], src.keys[good_gop + 1], 1000);
        good_gop = (good_gop + 1) % 8;
        let frames_before = stream_status(addr, NAME)["frames"].as_u64().unwrap();
        let from = viewer.len();
        p.out.send(&src.head).unwrap();
        p.out.feed(&run, Instant::now(), false).unwrap();
        wait_for_stream(addr, NAME, Duration::from_secs(2), |s| {
            s["state"] == "live" && s["frames"].as_u64() == Some(frames_before + run.len() as u64)
        });
        viewer.wait_for(
            from,
            &run.last().unwrap().data,
            Duration::from_secs(2),
            &format!("{what}: the viewer gets the good pusher's frames"),
        );
        want.extend(expect(&run));
        let (status, body) = p.finish();
        assert_eq!(status, 204, "{what}: {body}");
    };

    // A bad pusher: its body, then its answer and its log lines (other than "connected").
    let bad = |framing: Framing, body: &[u8]| -> (u16, String, Vec<(log::Level, String)>) {
        let (mut p, conflicts) = connect_pusher(addr, NAME, framing, Duration::from_secs(1));
        assert_eq!(conflicts, 0, "409 after the last pusher had its answer");
        let _ = p.out.send(body);
        let peer = p.peer.clone();
        let (status, text) = p.finish();
        let lines: Vec<(log::Level, String)> = log_lines(&format!("pusher {peer}"))
            .into_iter()
            .filter(|(_, l)| !l.ends_with(" connected"))
            .collect();
        (status, text, lines)
    };
    let one_warning = |lines: &[(log::Level, String)], what: &str, needle: &str| {
        assert_eq!(lines.len(), 1, "{what}: {lines:#?}");
        assert_eq!(lines[0].0, log::Level::Warn, "{what}: {lines:#?}");
        assert!(lines[0].1.contains(needle), "{what}: {:?}", lines[0].1);
        assert!(!lines[0].1.contains('\n'), "{what}: one line");
        assert!(lines[0].1.starts_with(&label), "{what}: names the stream");
    };

    // 1. Random bytes, before any good pusher.
    let r = rng.garbage(16 * 1024);
    let (status, body, lines) = bad(Framing::Length(r.len() as u64), &r);
    assert_eq!(status, 400, "{body}");
    let reason = "not a Matroska stream: it starts with 42";
    assert!(body.contains(reason), "{body}");
    one_warning(&lines, "random bytes", reason);
    let s = stream_status(addr, NAME);
    assert_eq!(s["state"], "waiting-for-pusher", "{s}");
    good(&mut want, "after random bytes");

    // 2. An EBML header cut short.
    let (status, body, lines) = bad(Framing::Chunked, &src.head[..10]);
    assert_eq!(status, 400, "{body}");
    let reason = "the input ended at byte 10, before the tracks were complete";
    assert!(body.contains(reason), "{body}");
    one_warning(&lines, "cut EBML header", reason);
    good(&mut want, "after a cut EBML header");

    // 3. Tracks cut short.
    let cut = src.head.len() - 7;
    let (status, body, lines) = bad(Framing::UntilClose, &src.head[..cut]);
    assert_eq!(status, 400, "{body}");
    one_warning(
        &lines,
        "cut Tracks",
        &format!("the input ended at byte {cut}"),
    );
    good(&mut want, "after cut Tracks");

    // 4. A good header, then garbage to the end: nothing to publish, one resync line.
    let mut b = src.head.to_vec();
    b.extend(rng.garbage(16 * 1024));
    let (status, body, _) = bad(Framing::Length(b.len() as u64), &b);
    assert_eq!(status, 204, "{body}");
    let lines: Vec<(log::Level, String)> = log_lines(&label)
        .into_iter()
        .filter(|(_, l)| l.contains("undecodable"))
        .collect();
    one_warning(
        &lines,
        "header then garbage",
        "skipped 16384 undecodable bytes (unexpected element",
    );
    assert!(
        lines[0]
            .1
            .contains("the input ended before a Cluster or EBML header")
    );
    good(&mut want, "after a header and garbage");

    // 5. An EBML header that claims 2^56 - 2 bytes.
    let mut huge = vec![
        0x1A, 0x45, 0xDF, 0xA3, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
    ];
    huge.extend(rng.bytes(4096));
    let (status, body, lines) = bad(Framing::Chunked, &huge);
    assert_eq!(status, 400, "{body}");
    let reason = "element 0x1A45DFA3 at byte 0 claims 72057594037927934 bytes, more than the 1048576 allowed";
    assert!(body.contains(reason), "{body}");
    one_warning(&lines, "huge EBML header", reason);
    good(&mut want, "after a huge EBML header");

    // 6. A good header, a Cluster with a SimpleBlock that claims 4 GiB, and then a good
    // GOP in the same body: the demuxer refuses the size (nothing is reserved for it),
    // resyncs at the next Cluster, and the viewer gets that GOP.
    let run = chunks(&src, src.keys[5], src.keys[6], 1000);
    let mut b = BytesMut::from(&src.head[..]);
    put_cluster_start(&mut b, 1000);
    let at = b.len();
    // SimpleBlock, size 2^32 in an 8-byte VINT.
    b.extend_from_slice(&[0xA3, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);
    b.extend_from_slice(&rng.garbage(1000));
    for c in &run {
        b.extend_from_slice(&c.bytes);
    }
    let from = viewer.len();
    let (status, body, _) = bad(Framing::Chunked, &b);
    assert_eq!(status, 204, "{body}");
    viewer.wait_for(
        from,
        &run.last().unwrap().data,
        Duration::from_secs(2),
        "the GOP after a 4 GiB block",
    );
    want.extend(expect(&run));
    let lines: Vec<(log::Level, String)> = log_lines(&label)
        .into_iter()
        .filter(|(_, l)| l.contains("claims 4294967296"))
        .collect();
    one_warning(
        &lines,
        "a 4 GiB block",
        &format!(
            "undecodable bytes (element 0xA3 at byte {} claims 4294967296 bytes, more than the 16777216 allowed); resuming at the next keyframe",
            at
        ),
    );
    good(&mut want, "after a 4 GiB block");

    // 7. Chunked framing that is not: a bad chunk size.
    let (mut p, conflicts) = connect_pusher(addr, NAME, Framing::Chunked, Duration::from_secs(1));
    assert_eq!(conflicts, 0);
    p.out.s.write_all(b"zz\r\nhello\r\n").unwrap();
    let peer = p.peer.clone();
    let (status, body) = read_answer(&mut p.out.s, std::mem::take(&mut p.early));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad chunk size \"zz\""), "{body}");
    let lines: Vec<(log::Level, String)> = log_lines(&format!("pusher {peer}"))
        .into_iter()
        .filter(|(_, l)| !l.ends_with(" connected"))
        .collect();
    one_warning(
        &lines,
        "bad chunk size",
        "read error: bad chunk size \"zz\"",
    );
    good(&mut want, "after a bad chunk size");

    // 8. An empty body.
    let (status, body, lines) = bad(Framing::Length(0), b"");
    assert_eq!(status, 400, "{body}");
    let reason = "the input ended at byte 0, before the tracks were complete";
    assert!(body.contains(reason), "{body}");
    one_warning(&lines, "empty body", reason);
    good(&mut want, "after an empty body");

    // 9. A codec muxcast does not carry.
    let mpeg2 = std::fs::read(testdata("unsupported_codec.mkv")).unwrap();
    let (status, body, lines) = bad(Framing::Length(mpeg2.len() as u64), &mpeg2);
    assert_eq!(status, 400, "{body}");
    let reason = "unsupported codec V_MPEG2";
    assert!(body.contains(reason), "{body}");
    one_warning(&lines, "unsupported codec", reason);
    good(&mut want, "after an unsupported codec");

    // The viewer saw every good frame, in order, and never lost its connection.
    assert!(!viewer.is_finished(), "the viewer lost its connection");
    let (mut p, _) = connect_pusher(addr, NAME, Framing::Chunked, Duration::from_secs(1));
    p.out.send(&load("opus_only.webm").head).unwrap();
    wait_until(Duration::from_secs(5), "the old viewer's end", || {
        viewer.is_finished()
    });
    let (_, body, end) = viewer.join();
    drop(p);
    assert_eq!(end, End::Closed);
    ends_cleanly(&body).unwrap();
    assert_frames(&body, &codec_ids(&src), &want, "the viewer across garbage");
    assert!(log_lines(NAME).iter().all(|(l, _)| *l > log::Level::Error));
    assert_no_panics(&[NAME]);
    assert!(server.stop().is_ok());
}

/// A pusher that switches codecs on every reconnect: H.264+AAC, Opus only, VP9+Opus,
/// H.264+AAC again, each time dropped mid-cluster. Each new header ends the viewers of
/// the old one cleanly (a complete last element, then the close); a viewer that connects
/// then gets the new tracks and every frame of the new pusher; HLS lists the new codecs.
#[test]
fn a_pusher_that_changes_tracks_ends_old_viewers_cleanly_and_new_ones_get_the_new_tracks() {
    init();
    const NAME: &str = "switch";
    let server = start(Setup::default(), vec![(NAME, Input::Push)]);
    let addr = server.addr;
    let files = [
        ("h264_aac.mkv", "avc1"),
        ("opus_only.webm", "opus"),
        ("vp9_opus.webm", "vp09"),
        ("h264_aac.mkv", "avc1"),
    ];
    let mut previous: Option<(Viewer, Vec<String>, Expected)> = None;
    for (i, (file, hls_codec)) in files.iter().enumerate() {
        let src = load(file);
        let codecs = codec_ids(&src);
        let (mut p, conflicts) = connect_pusher(
            addr,
            NAME,
            if i % 2 == 0 {
                Framing::Chunked
            } else {
                Framing::UntilClose
            },
            Duration::from_secs(2),
        );
        p.out.send(&src.head).unwrap();
        // The old viewer: a clean end after every frame of the old pusher.
        if let Some((v, old_codecs, want)) = previous.take() {
            wait_until(Duration::from_secs(5), "the old viewer's end", || {
                v.is_finished()
            });
            let (_, body, end) = v.join();
            assert_eq!(
                end,
                End::Closed,
                "{file}: the old viewer is closed, not cut"
            );
            ends_cleanly(&body).unwrap_or_else(|e| panic!("before {file}: {e}"));
            assert_frames(
                &body,
                &old_codecs,
                &want,
                &format!("the viewer before {file}"),
            );
        }
        wait_for_stream(addr, NAME, Duration::from_secs(2), |s| {
            let ids: Vec<&str> = s["tracks"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|t| t["codec_id"].as_str())
                .collect();
            ids == codecs
        });
        let viewer = watch(addr, &format!("/{NAME}/live.mkv"));
        wait_for_stream(addr, NAME, Duration::from_secs(2), |s| s["clients"] == 1);
        // About 2.5 s of media (a complete segment), unpaced, then half a block and the
        // connection drops.
        let end = if src.keys.len() > 3 {
            src.keys[2] + 12
        } else {
            src.frames.len() / 2
        };
        let run = chunks(&src, src.keys.first().copied().unwrap_or(0), end, 1000);
        let (whole, cut) = run.split_at(run.len() - 1);
        p.out.feed(whole, Instant::now(), false).unwrap();
        viewer.wait_for(
            0,
            &whole.last().unwrap().data,
            Duration::from_secs(3),
            &format!("{file}: the new viewer gets the new pusher's frames"),
        );
        // HLS follows: the multivariant playlist names the new codecs.
        wait_until(Duration::from_secs(3), "HLS lists the new codec", || {
            let (status, _, body) = request(
                addr,
                format!("GET /{NAME}/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
            );
            status == 200 && String::from_utf8_lossy(&body).contains(hls_codec)
        });
        let s = stream_status(addr, NAME);
        assert_eq!(s["state"], "live", "{s}");
        p.out.send_half(&cut[0]).unwrap();
        drop(p);
        println!("{file}: {} frames, {conflicts} transient 409s", whole.len());
        previous = Some((viewer, codecs, expect(whole)));
    }
    // The last viewer is still connected and has every frame of the last pusher.
    let (v, codecs, want) = previous.unwrap();
    wait_for_stream(addr, NAME, Duration::from_secs(2), |s| {
        s["state"] == "waiting-for-pusher"
    });
    assert!(!v.is_finished(), "the last viewer lost its connection");
    let (_, body, end) = v.join();
    assert_eq!(end, End::Open);
    assert_frames(&body, &codecs, &want, "the last viewer");
    let label = format!("stream {NAME} (push)");
    assert!(
        log_lines(&label)
            .iter()
            .all(|(l, _)| *l > log::Level::Error)
    );
    assert_no_panics(&[NAME]);
    assert!(server.stop().is_ok());
}

// ---------------------------------------------------------------------------------------
// HTTP pull from a tiny server that misbehaves on purpose.

/// What the test's HTTP server does with one connection.
#[derive(Clone, Copy, Debug)]
enum Serve {
    /// 200 with a Content-Length far beyond what it sends: ~1.2 s of media at real time,
    /// half a block, and the connection drops.
    DropWithLength,
    /// 404.
    NotFound,
    /// 200 until close: ~1.2 s of media, half a block, close.
    DropUntilClose,
    /// 200 and random bytes.
    Garbage,
    /// 200 chunked: media at real time until told, then another stream's header and
    /// frames in the same body (new tracks), until told to stop.
    Good,
}

struct Origin {
    addr: SocketAddr,
    /// When each connection came and when its answer ended.
    times: Arc<Mutex<Vec<(Instant, Instant)>>>,
    /// Frames each connection sent whole.
    sent: Arc<Mutex<Vec<Expected>>>,
    /// `Good`: sent the first media / go on with the new tracks / new tracks sent / stop.
    live: mpsc::Receiver<&'static str>,
    go: mpsc::Sender<&'static str>,
    thread: JoinHandle<()>,
}

fn origin(script: Vec<Serve>) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let times = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (live_tx, live) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<&'static str>();
    let (t, s) = (times.clone(), sent.clone());
    let thread = thread::Builder::new()
        .name("t-pull-origin".into())
        .spawn(move || {
            let src = load("h264_aac.mkv");
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            for (i, what) in script.into_iter().enumerate() {
                let mut sock = loop {
                    match listener.accept() {
                        Ok((sock, _)) => break sock,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if Instant::now() > deadline {
                                return;
                            }
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                };
                let came = Instant::now();
                sock.set_nonblocking(false).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                sock.set_nodelay(true).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).expect("request");
                    assert!(n > 0, "request cut");
                    req.extend_from_slice(&buf[..n]);
                }
                assert!(req.starts_with(b"GET /live.mkv HTTP/1.1\r\n"));
                let mut frames = Vec::new();
                let head = |len: &str| format!("HTTP/1.1 200 OK\r\nContent-Type: video/x-matroska\r\n{len}\r\n");
                match what {
                    Serve::NotFound => {
                        let _ = sock.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                    Serve::Garbage => {
                        let mut g = head("Connection: close\r\n").into_bytes();
                        g.extend((0..4096u32).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8 | 1));
                        let _ = sock.write_all(&g);
                    }
                    Serve::DropWithLength | Serve::DropUntilClose => {
                        let h = match what {
                            Serve::DropWithLength => head("Content-Length: 100000000\r\n"),
                            _ => head("Connection: close\r\n"),
                        };
                        sock.write_all(h.as_bytes()).unwrap();
                        let mut out = BodyOut { s: sock.try_clone().unwrap(), chunked: false };
                        let g = 2 * i % 8;
                        let run = chunks(&src, src.keys[g], src.keys[g + 1] + 6, 1000);
                        let (whole, cut) = run.split_at(run.len() - 1);
                        out.send(&src.head).unwrap();
                        out.feed(whole, Instant::now(), true).unwrap();
                        out.send_half(&cut[0]).unwrap();
                        frames = expect(whole);
                    }
                    Serve::Good => {
                        sock.write_all(head("Transfer-Encoding: chunked\r\n").as_bytes()).unwrap();
                        let mut out = BodyOut { s: sock.try_clone().unwrap(), chunked: true };
                        out.send(&src.head).unwrap();
                        let t0 = Instant::now();
                        let run = chunks(&src, src.keys[1], src.keys[4], 1000);
                        // Two GOPs and the keyframe that cuts the first segment (and
                        // the frames that get it out of the B-frame reorder buffer),
                        // then tell the test, then the rest of the third GOP.
                        let key = &src.frames[src.keys[3]].data;
                        let first = run.iter().position(|c| c.data == *key).unwrap() + 8;
                        out.feed(&run[..first], t0, true).unwrap();
                        frames = expect(&run[..first]);
                        s.lock().unwrap().push(frames.clone());
                        if live_tx.send("live").is_err() {
                            return;
                        }
                        let _ = go_rx.recv_timeout(Duration::from_secs(10));
                        out.feed(&run[first..], t0, true).unwrap();
                        frames.extend(expect(&run[first..]));
                        // New tracks in the same body.
                        let opus = load("opus_only.webm");
                        out.send(&opus.head).unwrap();
                        let o = chunks(&opus, 0, 100, 0);
                        out.feed(&o, Instant::now(), false).unwrap();
                        *s.lock().unwrap().last_mut().unwrap() = frames.clone();
                        let _ = live_tx.send("switched");
                        let _ = go_rx.recv_timeout(Duration::from_secs(10));
                        let _ = out.s.write_all(b"0\r\n\r\n");
                        t.lock().unwrap().push((came, Instant::now()));
                        return;
                    }
                }
                drop(sock);
                t.lock().unwrap().push((came, Instant::now()));
                s.lock().unwrap().push(frames);
            }
        })
        .unwrap();
    Origin {
        addr,
        times,
        sent,
        live,
        go,
        thread,
    }
}

/// An HTTP-pulled input whose server drops mid-body (with and without Content-Length),
/// answers 404, sends garbage, and finally serves well: the input reconnects after
/// each with the documented backoff (1 s, doubling, reset by a connection that delivered
/// media; jitter under 250 ms), logs one line per failure, and recovers: live again, the
/// viewer connected throughout gets every frame, HLS has a discontinuity per outage with
/// dates that jump by the outage.
#[test]
fn an_http_input_reconnects_with_backoff_after_drops_404s_and_garbage() {
    init();
    const NAME: &str = "pull";
    let script = vec![
        Serve::DropWithLength,
        Serve::NotFound,
        Serve::DropUntilClose,
        Serve::Garbage,
        Serve::Good,
    ];
    let o = origin(script.clone());
    let url = format!("http://{}/live.mkv", o.addr);
    let server = start(
        Setup::default(),
        vec![(NAME, Input::Http { url: url.clone() })],
    );
    let addr = server.addr;
    let viewer = watch(addr, &format!("/{NAME}/live.mkv"));

    // The 2 s wait after the 404 is visible in /status.json.
    let s = wait_for_stream(addr, NAME, Duration::from_secs(6), |s| {
        s["state"] == "reconnecting" && s["detail"].as_str().is_some_and(|d| d.contains("404"))
    });
    println!("during the backoff: {}", s["detail"]);

    assert_eq!(o.live.recv_timeout(Duration::from_secs(15)), Ok("live"));
    let s = wait_for_stream(addr, NAME, Duration::from_secs(2), |s| s["state"] == "live");
    println!("live again: {s}");
    let sent = o.sent.lock().unwrap().clone();
    viewer.wait_for(
        0,
        &sent.last().unwrap().last().unwrap().1,
        Duration::from_secs(2),
        "the viewer gets the last connection's frames",
    );
    // HLS: one discontinuity per connection that delivered media after the first, the
    // dates jump by the outages, the newest segment is dated on the wall clock.
    let (text, p) = try_media_playlist(
        addr,
        &format!("/{NAME}/v0/index.m3u8"),
        Duration::from_secs(2),
    )
    .expect("a media playlist once a segment was cut at a keyframe");
    let d = discontinuities(&text);
    assert!((1..=2).contains(&d), "{d} discontinuities:\n{text}");
    let jumps = check_dates(&p, 5000, "pull");
    let age = newest_date_age_ms(&text);
    assert!(
        (0..3000).contains(&age),
        "newest segment dated {age} ms ago:\n{text}"
    );
    println!("program date time jumps at the discontinuities: {jumps:?} ms");
    // Each outage: 1 s + 2 s of backoff, plus the dropped connection's own time.
    assert!(
        jumps.iter().all(|j| (3000..4500).contains(j)),
        "the dates do not jump by the outages: {jumps:?}"
    );

    // New tracks in the same body: the viewer of the old ones gets a clean end.
    o.go.send("go").unwrap();
    assert_eq!(o.live.recv_timeout(Duration::from_secs(5)), Ok("switched"));
    wait_until(Duration::from_secs(5), "the viewer's end", || {
        viewer.is_finished()
    });
    let (_, body, end) = viewer.join();
    assert_eq!(end, End::Closed);
    ends_cleanly(&body).unwrap();
    let want: Expected = o.sent.lock().unwrap().iter().flatten().cloned().collect();
    assert_frames(
        &body,
        &codec_ids(&load("h264_aac.mkv")),
        &want,
        "the pull viewer",
    );
    o.go.send("stop").unwrap();
    o.thread.join().expect("origin thread");

    // Backoff: after a connection with media 1 s, then doubling; jitter < 250 ms.
    let times = o.times.lock().unwrap().clone();
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].1).as_secs_f64())
        .collect();
    println!("reconnect delays: {gaps:.2?} s");
    for (k, (gap, want)) in gaps.iter().zip([1.0, 2.0, 1.0, 2.0]).enumerate() {
        assert!(
            *gap >= want - 0.05 && *gap < want + 0.25 + 0.5,
            "delay {k}: {gap:.3} s, expected {want} s + jitter ({gaps:.2?})"
        );
    }

    // One warning per failure, each naming the stream, the reason and the delay.
    let label = format!("stream {NAME} ({url})");
    let warnings = || -> Vec<String> {
        log_lines(&label)
            .into_iter()
            .filter(|(l, _)| *l == log::Level::Warn)
            .map(|(_, l)| l)
            .collect()
    };
    // The last one (the connection the test ended) may still be on its way.
    wait_until(Duration::from_secs(2), "five warnings", || {
        warnings().len() >= 5
    });
    let warnings = warnings();
    let reasons = [
        "read error: body ended ",
        "server answered 404 Not Found; reconnecting in 2.",
        "the server ended the stream; reconnecting in 1.",
        "not a Matroska stream: it starts with ",
        // The last connection, ended by the test (and then, if a second passes, the
        // refused connections to the origin that is gone).
        "the server ended the stream; reconnecting in 1.",
    ];
    assert!(warnings.len() >= reasons.len(), "{warnings:#?}");
    for (w, r) in warnings.iter().zip(reasons) {
        assert!(
            w.contains(r) && w.contains("; reconnecting in "),
            "{w:?} lacks {r:?}"
        );
    }
    for w in &warnings[reasons.len()..] {
        assert!(w.contains("Connection refused"), "{warnings:#?}");
    }
    let connected = log_lines(&format!("{label}: connected to {url}")).len();
    assert_eq!(connected, 4, "connected after every 200");
    assert!(log_lines(NAME).iter().all(|(l, _)| *l > log::Level::Error));
    assert_no_panics(&[NAME]);
    assert!(server.stop().is_ok());
}

/// An element at Segment level that claims an absurd size (a corrupt size field, or
/// garbage whose first bytes read as a 4-byte ID): the demuxer skips it by its size, as
/// EBML asks, which swallows everything after it. Between Clusters of known size (what
/// ffmpeg writes even into a pipe: testdata/live_ffmpeg.mkv) that is any corruption whose
/// first byte is 0x10-0x1F (a 4-byte ID) followed by a long size field. Expected: at
/// least one clear log line per such input; the stream must also take the next pusher.
#[test]
fn a_huge_element_between_clusters_does_not_swallow_the_push_without_a_word() {
    init();
    const NAME: &str = "swallow";
    let server = start(Setup::default(), vec![(NAME, Input::Push)]);
    let addr = server.addr;
    let file = std::fs::read(testdata("live_ffmpeg.mkv")).unwrap();
    let (_, src) = oracle(&file);
    let clusters: Vec<usize> = (0..file.len() - 4)
        .filter(|&i| file[i..i + 4] == [0x1F, 0x43, 0xB6, 0x75])
        .collect();
    assert!(
        clusters.len() >= 4,
        "live_ffmpeg.mkv: Clusters of known size"
    );
    // (what, bytes inserted, where)
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "garbage whose first bytes read as ID 0x12345678 with a 2^40-byte size, after the first Cluster",
            {
                let mut g = vec![
                    0x12, 0x34, 0x56, 0x78, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
                ];
                g.extend(Rng(7).garbage(3000));
                g
            },
            clusters[1],
        ),
        (
            "a Void claiming 2^50 bytes before the first Cluster",
            vec![0xEC, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            clusters[0],
        ),
    ];
    let mut silent = Vec::new();
    // The demuxer's warnings carry the stream's label, the pusher's lines its address.
    let stream_warnings = || {
        log_lines(&format!("stream {NAME} (push): skipped"))
            .into_iter()
            .filter(|(l, _)| *l == log::Level::Warn)
            .collect::<Vec<_>>()
    };
    for (what, insert, at) in &cases {
        let frames_at_start = stream_status(addr, NAME)["frames"].as_u64().unwrap();
        let warned_before = stream_warnings().len();
        let mut body = file[..*at].to_vec();
        body.extend_from_slice(insert);
        body.extend_from_slice(&file[*at..]);
        let (mut p, conflicts) =
            connect_pusher(addr, NAME, Framing::Chunked, Duration::from_secs(1));
        assert_eq!(conflicts, 0);
        p.out.send(&body).unwrap();
        let peer = p.peer.clone();
        let (status, answer) = p.finish();
        let mut lines: Vec<(log::Level, String)> = log_lines(&format!("pusher {peer}"))
            .into_iter()
            .filter(|(l, _)| *l == log::Level::Warn)
            .collect();
        lines.extend(stream_warnings().into_iter().skip(warned_before));
        // The stream goes on: a good pusher is taken at once and published.
        let (mut good, conflicts) =
            connect_pusher(addr, NAME, Framing::Chunked, Duration::from_secs(1));
        assert_eq!(
            conflicts, 0,
            "{what}: 409 after the last pusher had its answer"
        );
        let frames_before = stream_status(addr, NAME)["frames"].as_u64().unwrap();
        good.out.send(&file[..file.len() - 1]).unwrap();
        wait_for_stream(addr, NAME, Duration::from_secs(2), |s| {
            s["state"] == "live" && s["frames"].as_u64().unwrap() > frames_before
        });
        let (s, _) = good.finish();
        assert_eq!(s, 204);
        let published = frames_before - frames_at_start;
        println!(
            "{what}: answered {status} {answer:?}; warnings {lines:?}; {published} of {} frames published",
            src.len()
        );
        if lines.is_empty() {
            silent.push(format!(
                "{what}: the pusher was answered {status}, no warning was logged (only \
                 \"connected\" and \"finished\"), and {published} of its {} frames were published",
                src.len()
            ));
        }
    }
    assert_no_panics(&[NAME]);
    assert!(server.stop().is_ok());

    // The same bytes from a pulled input whose server keeps sending (a camera): after the
    // first Cluster nothing more is published, for as long as bytes arrive.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cam.mkv", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (body, tail, st) = {
        let mut b = file[..clusters[1]].to_vec();
        b.extend_from_slice(&cases[0].1);
        (b, file[clusters[1]..].to_vec(), stop.clone())
    };
    let camera = thread::Builder::new()
        .name("t-swallow-pull-camera".into())
        .spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut sock = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                    Err(e) => panic!("{e}"),
                }
            };
            sock.set_nonblocking(false).unwrap();
            let mut req = [0u8; 1024];
            let _ = sock.read(&mut req);
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let _ = sock.write_all(&body);
            // The rest of the file, again and again, as a camera keeps sending.
            let mut sent = 0;
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                if sock.write_all(&tail).is_err() {
                    break;
                }
                sent += tail.len();
                thread::sleep(Duration::from_millis(250));
            }
            sent
        })
        .unwrap();
    const PULL: &str = "swallow-pull";
    let server = start(
        Setup::default(),
        vec![(PULL, Input::Http { url: url.clone() })],
    );
    wait_for_stream(server.addr, PULL, Duration::from_secs(5), |s| {
        s["frames"].as_u64() > Some(0)
    });
    thread::sleep(Duration::from_secs(3));
    let s = stream_status(server.addr, PULL);
    stop.store(true, Ordering::SeqCst);
    let sent = camera.join().expect("camera thread");
    let warnings: Vec<(log::Level, String)> = log_lines(&format!("stream {PULL} ({url})"))
        .into_iter()
        .filter(|(l, _)| *l == log::Level::Warn)
        .collect();
    println!("pulled: {s}; {sent} bytes sent after the element; warnings {warnings:?}");
    if s["state"] == "live" && warnings.is_empty() {
        silent.push(format!(
            "the same from a pulled input whose server kept sending ({sent} more bytes over 3 \
             s): state {}, {} frames published (the first Cluster's), no reconnect, no log line",
            s["state"], s["frames"]
        ));
    }
    assert_no_panics(&[PULL]);
    drop(server);

    assert!(
        silent.is_empty(),
        "an absurd element size at Segment level swallows the rest of the input without a \
         word:\n{}",
        silent.join("\n")
    );
}
