//! RTSP cameras, read with `retina` in the stream's reader thread.
//!
//! tokio stays inside this module: the reader thread builds a current-thread runtime and
//! blocks on one task that connects, plays, converts retina's frames into [`Track`]s and
//! [`Frame`]s for the [`Publisher`], and reconnects with backoff whenever the session ends.
//! Nothing downstream knows the frames came from RTSP.
//!
//! What the camera world demands, and where it is handled:
//! - credentials: retina refuses them inside the URL; [`RtspUrl`] takes them out;
//! - streams retina cannot depacketize (Opus, MP4A-LATM, ...) fail the whole session if
//!   they are set up: [`carry`] picks the ones we can use, the rest are logged and skipped;
//! - MJPEG (RTP/JPEG): retina rebuilds each JPEG's headers from the RTP/JPEG header; every
//!   frame is a keyframe, the size comes with the first whole frame, and the track goes to
//!   live MKV only (HLS/DASH leave it out);
//! - parameter sets: tracks are built at the first keyframe from whatever retina holds
//!   then (in-band ones replace the SDP's as soon as they are seen); a later change
//!   publishes new tracks;
//! - timestamps: retina unwraps 32-bit RTP time into 64 bits from the session's start;
//!   clock jumps are re-based by the publisher's timeline;
//! - a session that goes silent for `--rtsp-timeout`, ends or fails is reconnected with
//!   the same backoff as HTTP pulls; viewers stay connected;
//! - sessions are hung up with TEARDOWN (retina sends it in the background when a session
//!   is dropped, as long as the runtime runs): on demand after `--idle-close`, and when the
//!   process exits ([`hang_up_all`]), which otherwise leaves the camera streaming to no
//!   one until its session timeout (60 s on GStreamer's RTSP server).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::Either;
use log::{debug, info, warn};
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, Session, SessionGroup, SessionIdPolicy,
    SessionOptions, SetupOptions, TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{AudioParameters, CodecItem, FrameFormat, ParametersRef, VideoParameters};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};
use url::Url;

use super::backoff::Backoff;
use crate::media::{AudioInfo, Codec, Frame, Track, VideoInfo};
use crate::stream::{Demand, InputState, Publisher};

/// How RTP reaches us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RtspTransport {
    /// Interleaved in the RTSP connection: the default, it crosses NAT and firewalls and
    /// loses nothing.
    #[default]
    Tcp,
    /// RTP/AVP over UDP (retina: no reorder buffer, no receiver reports; LAN only).
    Udp,
}

/// A camera URL with its credentials taken out (retina wants them separately).
#[derive(Clone, PartialEq, Eq)]
pub struct RtspUrl {
    /// Without userinfo and without our own `transport` query parameter.
    url: Url,
    username: Option<String>,
    password: Option<String>,
}

impl RtspUrl {
    /// The URL retina connects to (no credentials in it).
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn credentials(&self) -> Option<Credentials> {
        self.username.as_ref().map(|u| Credentials {
            username: u.clone(),
            password: self.password.clone().unwrap_or_default(),
        })
    }
}

/// The URL with the user name but never the password: for logs and /status.json.
impl fmt::Display for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.url.as_str();
        match (&self.username, s.split_once("://")) {
            (Some(user), Some((scheme, rest))) => write!(f, "{scheme}://{user}@{rest}"),
            _ => f.write_str(s),
        }
    }
}

impl fmt::Debug for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtspUrl({self})")
    }
}

/// Decodes `%XX` escapes (userinfo in a URL is percent-encoded; `+` stays `+`).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials are not UTF-8".to_string())
}

/// Parses `rtsp://[user:pass@]host[:port]/path[?query]`, taking out the credentials and
/// our `transport=tcp|udp` query parameter (the camera's own query parameters stay).
pub fn parse_url(spec: &str) -> Result<(RtspUrl, RtspTransport), String> {
    let mut url = Url::parse(spec).map_err(|e| format!("{spec}: not a valid URL ({e})"))?;
    if url.scheme() != "rtsp" {
        return Err(format!("{spec}: only rtsp:// URLs are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{spec}: no host"));
    }
    let mut transport = RtspTransport::Tcp;
    if let Some(query) = url.query() {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some((key, value)) if key.eq_ignore_ascii_case("transport") => {
                    transport = match value.to_ascii_lowercase().as_str() {
                        "tcp" => RtspTransport::Tcp,
                        "udp" => RtspTransport::Udp,
                        _ => {
                            return Err(format!("{spec}: transport={value}: expected tcp or udp"));
                        }
                    }
                }
                _ => kept.push(pair),
            }
        }
        let kept = kept.join("&");
        url.set_query((!kept.is_empty()).then_some(kept.as_str()));
    }
    let username = match url.username() {
        "" => None,
        u => Some(percent_decode(u)?),
    };
    let password = url.password().map(percent_decode).transpose()?;
    if password.is_some() && username.is_none() {
        return Err(format!("{spec}: a password without a user name"));
    }
    // Cannot fail: the URL has a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((
        RtspUrl {
            url,
            username,
            password,
        },
        transport,
    ))
}

/// What we make of one stream of the camera's SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    H264,
    H265,
    Aac,
    Mulaw,
    Alaw,
    /// L16: big-endian 16-bit PCM.
    L16,
    /// RTP/JPEG (RFC 2435): retina rebuilds each frame's JPEG headers; live MKV only.
    Mjpeg,
}

impl Carry {
    fn is_video(self) -> bool {
        matches!(self, Carry::H264 | Carry::H265 | Carry::Mjpeg)
    }
}

/// Whether we can carry a stream, from its SDP description. `Err` says why not, for the
/// one log line per skipped stream.
pub fn carry(
    media: &str,
    encoding: &str,
    clock_rate: u32,
    has_parameters: bool,
) -> Result<Carry, String> {
    let c = match (media, encoding) {
        ("video", "h264") => Carry::H264,
        ("video", "h265") => Carry::H265,
        ("audio", "mpeg4-generic") => Carry::Aac,
        ("audio", "pcmu") => Carry::Mulaw,
        ("audio", "pcma") => Carry::Alaw,
        ("audio", "l16") => Carry::L16,
        ("audio", "opus" | "mp4a-latm") => {
            return Err("retina has no depacketizer for it".into());
        }
        ("video" | "image", "jpeg") => Carry::Mjpeg,
        ("application", _) => return Err("metadata, not audio or video".into()),
        _ => return Err("not a codec muxcast carries".into()),
    };
    if c.is_video() && clock_rate != 90_000 {
        return Err(format!("clock rate {clock_rate}, not 90000"));
    }
    // retina reads audio parameters from the SDP; without them its depacketizer failed
    // (e.g. AAC without config=), and setting the stream up would fail the session.
    if !c.is_video() && !has_parameters {
        return Err("its SDP parameters are missing or invalid".into());
    }
    if clock_rate == 0 {
        return Err("clock rate 0".into());
    }
    Ok(c)
}

/// A G.711 WAVEFORMATEX, as ffmpeg writes it into Matroska's `A_MS/ACM` CodecPrivate.
pub fn waveformatex(format_tag: u16, sample_rate: u32, channels: u16) -> Bytes {
    let mut w = Vec::with_capacity(18);
    w.extend_from_slice(&format_tag.to_le_bytes());
    w.extend_from_slice(&channels.to_le_bytes());
    w.extend_from_slice(&sample_rate.to_le_bytes());
    // 8 bits per sample: bytes per second = rate × channels, block align = channels.
    w.extend_from_slice(&(sample_rate.saturating_mul(u32::from(channels))).to_le_bytes());
    w.extend_from_slice(&channels.to_le_bytes());
    w.extend_from_slice(&8u16.to_le_bytes());
    w.extend_from_slice(&0u16.to_le_bytes());
    Bytes::from(w)
}

/// A video track from retina's parameters (`extra_data` is the avcC/hvcC for MP4 framing;
/// empty for JPEG, whose frames carry their own tables).
pub fn video_track(codec: Codec, params: &VideoParameters) -> Track {
    let (width, height) = params.pixel_dimensions();
    // Anamorphic sub-streams: a display width from the pixel aspect ratio.
    let display_width = params
        .pixel_aspect_ratio()
        .filter(|&(h, v)| h != v && h > 0 && v > 0)
        .map(|(h, v)| (u64::from(width) * u64::from(h) / u64::from(v)) as u32);
    Track {
        codec,
        codec_id: match codec {
            Codec::H265 => "V_MPEGH/ISO/HEVC",
            Codec::Mjpeg => "V_MJPEG",
            _ => "V_MPEG4/ISO/AVC",
        }
        .into(),
        codec_private: Some(params.extra_data())
            .filter(|d| !d.is_empty())
            .map(Bytes::copy_from_slice),
        video: Some(VideoInfo {
            width,
            height,
            display_width,
            display_height: display_width.map(|_| height),
        }),
        audio: None,
        default_duration_ns: None,
        codec_delay_ns: None,
        seek_pre_roll_ns: None,
        language: None,
    }
}

/// An audio track from retina's parameters.
pub fn audio_track(carry: Carry, params: &AudioParameters) -> Track {
    let rate = params.clock_rate();
    let channels = params.channels().get();
    let (codec, codec_id, private, bits) = match carry {
        Carry::Aac => (
            Codec::Aac,
            "A_AAC",
            Some(Bytes::copy_from_slice(params.extra_data())),
            None,
        ),
        Carry::Mulaw => (
            Codec::Mulaw,
            "A_MS/ACM",
            Some(waveformatex(7, rate, channels)),
            Some(8),
        ),
        Carry::Alaw => (
            Codec::Alaw,
            "A_MS/ACM",
            Some(waveformatex(6, rate, channels)),
            Some(8),
        ),
        _ => (Codec::Pcm, "A_PCM/INT/BIG", None, Some(16)),
    };
    Track {
        codec,
        codec_id: codec_id.into(),
        codec_private: private,
        video: None,
        audio: Some(AudioInfo {
            sample_rate: f64::from(rate),
            channels: u32::from(channels),
            bit_depth: bits,
        }),
        default_duration_ns: None,
        codec_delay_ns: None,
        seek_pre_roll_ns: None,
        language: None,
    }
}

/// Whether an H.265 access unit (4-byte length-prefixed NAL units) is an IRAP picture:
/// IDR, CRA or BLA. retina flags only IDR pictures as random access points, and encoders
/// with open GOPs (x265's default, some cameras) send CRA keyframes: without this a stream
/// would have one GOP forever.
pub fn h265_irap(au: &[u8]) -> bool {
    let mut rest = au;
    while let (Some(len), Some(header)) = (rest.get(..4), rest.get(4)) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len == 0 || rest.len() - 4 < len {
            return false;
        }
        let nal_type = (header >> 1) & 0x3f;
        // The first VCL NAL unit decides: every VCL NAL unit of a picture has its type.
        if nal_type < 32 {
            return (16..=23).contains(&nal_type);
        }
        rest = &rest[4 + len..];
    }
    false
}

/// retina's errors span several lines: the error, then the connection and message
/// context (addresses, timestamps). Logs and /status.json get the first.
fn one_line(e: &impl fmt::Display) -> String {
    let text = e.to_string();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error")
        .to_string()
}

/// Ticks of a clock at `rate` Hz to nanoseconds, rounded.
pub fn ticks_to_ns(ticks: i64, rate: u32) -> i64 {
    let rate = i128::from(rate.max(1));
    let ns = (i128::from(ticks) * 1_000_000_000 + rate / 2).div_euclid(rate);
    ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Settings of RTSP inputs.
#[derive(Clone, Debug)]
pub struct RtspOptions {
    /// A session with no media for this long is dropped and reconnected; also the limit
    /// for each request while connecting.
    pub timeout: Duration,
    /// On demand: connect only while the stream is wanted, and disconnect after this
    /// long without anyone wanting it.
    pub on_demand: Option<(Arc<Demand>, Duration)>,
}

/// How long a camera waits for its TEARDOWN to be answered when the process exits.
const EXIT_TEARDOWN_WAIT: Duration = Duration::from_millis(1500);
/// How long the process exit waits for every camera to hang up: a little more than one
/// TEARDOWN wait, so that a camera that is off (or a reader stuck elsewhere) never holds
/// the exit longer.
const EXIT_WAIT: Duration = Duration::from_millis(2000);

/// Hangs the cameras up when the process exits. Reader threads are not joined at exit:
/// without this their sessions would vanish with the process, and the camera would keep
/// them (and send RTP to a closed port, over UDP) until its session timeout.
/// [`hang_up_all`], called by `main` once its servers have stopped, tells every input to
/// drop its session and waits (at most [`EXIT_WAIT`]) until each has had its TEARDOWN
/// answered or given up.
struct ExitGate {
    exiting: watch::Sender<bool>,
    /// RTSP inputs still running (not yet hung up).
    running: Mutex<usize>,
    done: Condvar,
}

static EXIT_GATE: OnceLock<ExitGate> = OnceLock::new();

impl ExitGate {
    fn get() -> &'static ExitGate {
        EXIT_GATE.get_or_init(|| ExitGate {
            exiting: watch::Sender::new(false),
            running: Mutex::new(0),
            done: Condvar::new(),
        })
    }

    /// Counts an input as running until the guard is dropped.
    fn enter(&'static self) -> Running {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Running(self)
    }
}

/// One running RTSP input (see [`ExitGate`]).
struct Running(&'static ExitGate);

impl Drop for Running {
    fn drop(&mut self) {
        let mut n = self
            .0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        self.0.done.notify_all();
    }
}

/// Before the process exits: every RTSP input hangs up (TEARDOWN); returns when all have,
/// or after [`EXIT_WAIT`]. Inputs started later do not run (they would not be torn down).
pub fn hang_up_all() {
    let Some(gate) = EXIT_GATE.get() else {
        return;
    };
    gate.exiting.send_replace(true);
    let deadline = std::time::Instant::now() + EXIT_WAIT;
    let mut n = gate.running.lock().unwrap_or_else(PoisonError::into_inner);
    while *n > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        n = gate
            .done
            .wait_timeout(n, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Runs an RTSP input until the process exits: connect, play, publish; on any end, back
/// off and again. Returns early only when it cannot run at all (no tokio runtime).
pub fn run_rtsp(
    url: &RtspUrl,
    transport: RtspTransport,
    publisher: &mut Publisher,
    options: &RtspOptions,
    label: &str,
) -> Result<(), String> {
    let gate = ExitGate::get();
    let _running = gate.enter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the RTSP runtime: {e}"))?;
    let mut camera = Camera {
        url,
        transport,
        options,
        label,
        publisher,
        group: Arc::new(SessionGroup::default().named(label.to_string())),
        published: false,
        skips_logged: false,
    };
    let exiting = gate.exiting.subscribe();
    runtime.block_on(camera.run(exiting));
    Ok(())
}

/// One RTSP input across its sessions.
struct Camera<'a> {
    url: &'a RtspUrl,
    transport: RtspTransport,
    options: &'a RtspOptions,
    label: &'a str,
    publisher: &'a mut Publisher,
    group: Arc<SessionGroup>,
    /// Some session published tracks: the next one continues the timeline.
    published: bool,
    skips_logged: bool,
}

/// How a session ended.
struct Ended {
    frames: u64,
    why: String,
    /// On demand, no one wanted the stream any more: we hung up.
    idle: bool,
}

/// How `play` ended without an error.
enum Stop {
    CameraEnded,
    NoViewers,
}

impl Camera<'_> {
    /// Sessions, one after the other, until the process exits; then hangs up.
    async fn run(&mut self, mut exiting: watch::Receiver<bool>) {
        let group = self.group.clone();
        let removed = self.publisher.stop_flag();
        let exit = async {
            // The process exits, or a configuration reload removed the stream.
            let exiting = exiting.wait_for(|&e| e);
            let removed = async {
                while !removed.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            };
            futures::future::select(std::pin::pin!(exiting), std::pin::pin!(removed)).await;
            // Sessions dropped earlier whose TEARDOWN retina is still trying (a camera
            // that went away): not worth holding the exit for.
            group.stale_sessions().num_sessions
        };
        // At exit the sessions future is dropped at the end of this block, and with it
        // the session in flight: retina starts its TEARDOWN in the background, on this
        // runtime, which `hang_up` keeps running.
        let stale_before = {
            let sessions = std::pin::pin!(self.sessions());
            match futures::future::select(sessions, std::pin::pin!(exit)).await {
                Either::Left(((), _)) => return,
                Either::Right((stale_before, _)) => stale_before,
            }
        };
        self.hang_up(stale_before).await;
    }

    /// At exit: waits (bounded) for the TEARDOWN of the session just dropped, if any.
    async fn hang_up(&self, stale_before: usize) {
        let status = self.group.stale_sessions();
        if status.num_sessions <= stale_before {
            return;
        }
        match timeout(EXIT_TEARDOWN_WAIT, self.group.await_stale_sessions(&status)).await {
            Ok(()) => info!("{}: exiting; hung up (TEARDOWN sent)", self.label),
            Err(_) => warn!(
                "{}: exiting; TEARDOWN not answered within {} s",
                self.label,
                EXIT_TEARDOWN_WAIT.as_secs_f64()
            ),
        }
    }

    async fn sessions(&mut self) {
        let mut backoff = Backoff::new();
        let mut attempt = 0u64;
        self.publisher.state(InputState::Starting);
        loop {
            if !self.wanted() {
                self.publisher.state(InputState::Idle);
                while !self.wanted() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                info!("{}: wanted by a viewer; connecting (on demand)", self.label);
                self.publisher.state(InputState::Starting);
                backoff.reset();
                attempt = 0;
            }
            attempt += 1;
            self.wait_for_stale_sessions().await;
            let ended = self.session().await;
            if ended.idle {
                info!("{}: {}", self.label, ended.why);
                continue;
            }
            if ended.frames > 0 {
                backoff.reset();
                attempt = 0;
            }
            let delay = backoff.delay();
            let detail = if self.published {
                format!(
                    "{}; reconnecting in {:.1} s",
                    ended.why,
                    delay.as_secs_f64()
                )
            } else {
                format!(
                    "{}; attempt {attempt} failed, retrying in {:.1} s",
                    ended.why,
                    delay.as_secs_f64()
                )
            };
            warn!("{}: {detail}", self.label);
            self.publisher.state(InputState::Reconnecting(detail));
            tokio::time::sleep(delay).await;
        }
    }

    /// Whether to be connected: always, or on demand while someone wants the stream.
    fn wanted(&self) -> bool {
        self.options
            .on_demand
            .as_ref()
            .is_none_or(|(demand, idle_close)| demand.wanted_within(*idle_close))
    }

    /// A dropped session may still be alive on the camera (retina tears it down in the
    /// background); cameras with few session slots refuse a new one until it is gone. Waits
    /// at most the RTSP timeout: a camera that is off never answers the TEARDOWN.
    async fn wait_for_stale_sessions(&self) {
        let status = self.group.stale_sessions();
        if status.num_sessions == 0 {
            return;
        }
        debug!(
            "{}: waiting for {} stale session(s) to be torn down",
            self.label, status.num_sessions
        );
        let _ = timeout(
            self.options.timeout,
            self.group.await_stale_sessions(&status),
        )
        .await;
    }

    /// One session: describe, set up, play, publish until it ends.
    async fn session(&mut self) -> Ended {
        let mut frames = 0u64;
        let (why, idle) = match self.play(&mut frames).await {
            Ok(Stop::CameraEnded) => ("the camera ended the session".to_string(), false),
            Ok(Stop::NoViewers) => {
                let idle_close = self
                    .options
                    .on_demand
                    .as_ref()
                    .map_or(0.0, |d| d.1.as_secs_f64());
                (
                    format!("no viewers for {idle_close} s; disconnected (on demand)"),
                    true,
                )
            }
            Err(e) => (e, false),
        };
        Ended { frames, why, idle }
    }

    async fn play(&mut self, frames: &mut u64) -> Result<Stop, String> {
        let step = self.options.timeout;
        let session_options = SessionOptions::default()
            .creds(self.url.credentials())
            .user_agent(format!("muxcast/{}", env!("CARGO_PKG_VERSION")))
            .session_group(self.group.clone())
            // Some cameras answer each SETUP with a different session id.
            .session_id(SessionIdPolicy::UseFirst);
        let mut session = timeout(
            step,
            Session::describe(self.url.url().clone(), session_options),
        )
        .await
        .map_err(|_| format!("DESCRIBE: no answer within {} s", step.as_secs_f64()))?
        .map_err(|e| format!("DESCRIBE: {}", one_line(&e)))?;

        let chosen = self.choose(session.streams())?;
        for &(stream_i, _) in &chosen {
            let transport = match self.transport {
                RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
                RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
            };
            let setup = SetupOptions::default()
                .transport(transport)
                .frame_format(FrameFormat::MP4);
            timeout(step, session.setup(stream_i, setup))
                .await
                .map_err(|_| format!("SETUP: no answer within {} s", step.as_secs_f64()))?
                .map_err(|e| format!("SETUP: {}", one_line(&e)))?;
        }
        // RTP-Info when every stream has it (A/V sync), else each stream from its first
        // packet: cameras get RTP-Info wrong or leave it out.
        let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
        let session = timeout(step, session.play(play))
            .await
            .map_err(|_| format!("PLAY: no answer within {} s", step.as_secs_f64()))?
            .map_err(|e| format!("PLAY: {}", one_line(&e)))?;
        let mut demuxed = session.demuxed().map_err(|e| one_line(&e))?;
        info!(
            "{}: playing over {}",
            self.label,
            match self.transport {
                RtspTransport::Tcp => "TCP",
                RtspTransport::Udp => "UDP",
            }
        );

        let mut media = SessionMedia::new(&chosen, demuxed.streams().len());
        let mut deadline = Instant::now() + step;
        loop {
            let item = match timeout_at(deadline, demuxed.next()).await {
                Err(_) => {
                    return Err(format!("no media for {} s", step.as_secs_f64()));
                }
                Ok(None) => return Ok(Stop::CameraEnded),
                Ok(Some(Err(e))) => return Err(one_line(&e)),
                Ok(Some(Ok(item))) => item,
            };
            if !self.wanted() {
                // Dropping the session sends TEARDOWN (retina, in the background).
                return Ok(Stop::NoViewers);
            }
            let frame = match item {
                CodecItem::VideoFrame(f) => {
                    let Some(track) = media.track_of(f.stream_id()) else {
                        continue;
                    };
                    deadline = Instant::now() + step;
                    let keyframe =
                        f.is_random_access_point() || (media.is_h265(track) && h265_irap(f.data()));
                    let starts = !media.started && keyframe;
                    if starts || (media.started && f.has_new_parameters()) {
                        match media.tracks(demuxed.streams()) {
                            Ok(tracks) => self.publish_tracks(&mut media, tracks),
                            Err(why) if starts => {
                                if !media.warned_no_parameters {
                                    media.warned_no_parameters = true;
                                    warn!("{}: keyframe dropped: {why}", self.label);
                                }
                                continue;
                            }
                            Err(why) => warn!("{}: new parameters ignored: {why}", self.label),
                        }
                    }
                    if !media.started {
                        continue;
                    }
                    if f.loss() > 0 {
                        debug!("{}: {} RTP packets lost", self.label, f.loss());
                    }
                    let ts = f.timestamp();
                    Frame {
                        track,
                        pts: ticks_to_ns(ts.elapsed(), ts.clock_rate().get()),
                        duration: None,
                        keyframe,
                        data: Bytes::from(f.into_data()),
                    }
                }
                CodecItem::AudioFrame(f) => {
                    let Some(track) = media.track_of(f.stream_id()) else {
                        continue;
                    };
                    deadline = Instant::now() + step;
                    if !media.started && !media.has_video {
                        let tracks = media.tracks(demuxed.streams())?;
                        self.publish_tracks(&mut media, tracks);
                    }
                    if !media.started {
                        continue;
                    }
                    let rate = f.timestamp().clock_rate().get();
                    let samples = media.samples(track, f.data().len(), f.frame_length().get());
                    Frame {
                        track,
                        pts: ticks_to_ns(f.timestamp().elapsed(), rate),
                        duration: u64::try_from(ticks_to_ns(i64::from(samples), rate)).ok(),
                        keyframe: true,
                        data: Bytes::copy_from_slice(f.data()),
                    }
                }
                _ => continue,
            };
            if self.publisher.frame(frame).is_some() {
                *frames += 1;
            }
        }
    }

    fn publish_tracks(&mut self, media: &mut SessionMedia, tracks: Vec<Track>) {
        if !media.started {
            media.started = true;
            // A new session continues the stream's timeline where the last one ended
            // (HLS/DASH mark the outage).
            if self.published {
                self.publisher.resume_after_gap();
            }
            self.published = true;
            let names: Vec<String> = tracks
                .iter()
                .map(|t| match (&t.video, &t.audio) {
                    (Some(v), _) => format!("{} {}x{}", t.codec.name(), v.width, v.height),
                    (_, Some(a)) => format!("{} {} Hz", t.codec.name(), a.sample_rate),
                    _ => t.codec.name().to_string(),
                })
                .collect();
            info!(
                "{}: first keyframe; tracks: {}",
                self.label,
                names.join(", ")
            );
        }
        media.simple_audio = tracks
            .iter()
            .map(|t| match (&t.audio, t.codec) {
                (Some(a), Codec::Mulaw | Codec::Alaw) => Some((8, a.channels)),
                (Some(a), Codec::Pcm) => Some((16, a.channels)),
                _ => None,
            })
            .collect();
        // The publisher keeps the header when the tracks are the same.
        self.publisher.tracks(tracks);
    }

    /// Picks at most one video and one audio stream we can carry; logs the others once.
    fn choose(
        &mut self,
        streams: &[retina::client::Stream],
    ) -> Result<Vec<(usize, Carry)>, String> {
        let mut video = None;
        let mut audio = None;
        let mut skipped = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            let what = format!(
                "stream {i} ({}/{}/{}{})",
                s.media(),
                s.encoding_name(),
                s.clock_rate_hz(),
                s.channels().map(|c| format!("/{c}")).unwrap_or_default()
            );
            match carry(
                s.media(),
                s.encoding_name(),
                s.clock_rate_hz(),
                s.parameters().is_some(),
            ) {
                Ok(c) if c.is_video() && video.is_none() => video = Some((i, c)),
                Ok(c) if !c.is_video() && audio.is_none() => audio = Some((i, c)),
                Ok(_) => skipped.push(format!("{what}: one stream of each kind is carried")),
                Err(why) => skipped.push(format!("{what}: {why}")),
            }
        }
        // Once per input, not on every reconnect.
        if !self.skips_logged {
            self.skips_logged = true;
            for s in &skipped {
                warn!("{}: skipping {s}", self.label);
            }
        }
        let chosen: Vec<(usize, Carry)> = video.into_iter().chain(audio).collect();
        if chosen.is_empty() {
            return Err(format!(
                "no stream muxcast can carry ({} offered)",
                streams.len()
            ));
        }
        Ok(chosen)
    }
}

/// The streams of one session, as tracks.
struct SessionMedia {
    /// retina stream index → track index.
    tracks_by_stream: Vec<Option<usize>>,
    chosen: Vec<(usize, Carry)>,
    has_video: bool,
    /// Tracks published: frames flow.
    started: bool,
    warned_no_parameters: bool,
    /// Per track, for G.711 and L16: (bits per sample, channels).
    simple_audio: Vec<Option<(u32, u32)>>,
}

impl SessionMedia {
    fn new(chosen: &[(usize, Carry)], streams: usize) -> Self {
        let mut tracks_by_stream = vec![None; streams];
        for (track, &(stream_i, _)) in chosen.iter().enumerate() {
            if let Some(slot) = tracks_by_stream.get_mut(stream_i) {
                *slot = Some(track);
            }
        }
        SessionMedia {
            tracks_by_stream,
            chosen: chosen.to_vec(),
            has_video: chosen.iter().any(|(_, c)| c.is_video()),
            started: false,
            warned_no_parameters: false,
            simple_audio: Vec::new(),
        }
    }

    fn is_h265(&self, track: usize) -> bool {
        self.chosen
            .get(track)
            .is_some_and(|(_, c)| *c == Carry::H265)
    }

    fn track_of(&self, stream_id: usize) -> Option<usize> {
        self.tracks_by_stream.get(stream_id).copied().flatten()
    }

    /// Samples per channel in an audio frame. retina counts G.711/L16 samples of every
    /// channel together; divide them out.
    fn samples(&self, track: usize, bytes: usize, retina_len: u32) -> u32 {
        match self.simple_audio.get(track).copied().flatten() {
            Some((bits, channels)) => {
                let per_frame = (bits as usize / 8) * channels.max(1) as usize;
                u32::try_from(bytes / per_frame.max(1)).unwrap_or(retina_len)
            }
            None => retina_len,
        }
    }

    /// The tracks, from what retina knows now.
    fn tracks(&self, streams: &[retina::client::Stream]) -> Result<Vec<Track>, String> {
        self.chosen
            .iter()
            .map(|&(stream_i, c)| {
                let params = streams.get(stream_i).and_then(|s| s.parameters());
                match (c, params) {
                    (Carry::H264, Some(ParametersRef::Video(v))) => Ok(video_track(Codec::H264, v)),
                    (Carry::H265, Some(ParametersRef::Video(v))) => Ok(video_track(Codec::H265, v)),
                    // Known from the first whole frame (its RTP/JPEG header's size).
                    (Carry::Mjpeg, Some(ParametersRef::Video(v))) => {
                        Ok(video_track(Codec::Mjpeg, v))
                    }
                    (c, Some(ParametersRef::Audio(a))) if !c.is_video() => Ok(audio_track(c, a)),
                    _ => Err(format!("no parameter sets yet for stream {stream_i}")),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_transport_come_out_of_the_url() {
        let (u, t) = parse_url("rtsp://admin:p%40ss%3Aw0rd@192.168.1.10/stream1").unwrap();
        assert_eq!(t, RtspTransport::Tcp);
        assert_eq!(u.url().as_str(), "rtsp://192.168.1.10/stream1");
        let c = u.credentials().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("admin", "p@ss:w0rd")
        );
        assert_eq!(u.to_string(), "rtsp://admin@192.168.1.10/stream1");
        assert!(!format!("{u:?}").contains("w0rd"));

        let (u, t) =
            parse_url("rtsp://cam:8554/cam/realmonitor?channel=1&transport=UDP&subtype=0").unwrap();
        assert_eq!(t, RtspTransport::Udp);
        assert_eq!(
            u.url().as_str(),
            "rtsp://cam:8554/cam/realmonitor?channel=1&subtype=0"
        );
        assert!(u.credentials().is_none());

        let (u, t) = parse_url("rtsp://cam/x?transport=tcp").unwrap();
        assert_eq!((u.url().as_str(), t), ("rtsp://cam/x", RtspTransport::Tcp));
        // A user without a password: Digest with an empty password.
        let (u, _) = parse_url("rtsp://viewer@cam/x").unwrap();
        assert_eq!(u.credentials().unwrap().password, "");
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            "rtsp://cam/x?transport=http",
            "rtsp:///x",
            "rtsp://u:%zz@cam/",
            "http://cam/x",
            "rtsp://:pw@cam/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn streams_we_carry_and_the_ones_we_skip() {
        assert_eq!(carry("video", "h264", 90_000, false), Ok(Carry::H264));
        assert_eq!(carry("video", "h265", 90_000, true), Ok(Carry::H265));
        assert_eq!(
            carry("audio", "mpeg4-generic", 48_000, true),
            Ok(Carry::Aac)
        );
        assert_eq!(carry("audio", "pcmu", 8_000, true), Ok(Carry::Mulaw));
        assert_eq!(carry("audio", "pcma", 8_000, true), Ok(Carry::Alaw));
        assert!(carry("audio", "mpeg4-generic", 48_000, false).is_err());
        assert!(carry("audio", "opus", 48_000, true).is_err());
        assert!(carry("audio", "mp4a-latm", 48_000, true).is_err());
        // RTP/JPEG: "video" in SDPs, "image" in some; the size comes with the frames.
        assert_eq!(carry("video", "jpeg", 90_000, false), Ok(Carry::Mjpeg));
        assert_eq!(carry("image", "jpeg", 90_000, false), Ok(Carry::Mjpeg));
        assert!(carry("video", "jpeg", 8_000, false).is_err());
        assert!(carry("video", "h264", 1000, true).is_err());
        assert!(carry("application", "vnd.onvif.metadata", 90_000, true).is_err());
    }

    #[test]
    fn g711_waveformatex_is_what_ffmpeg_writes() {
        // testdata/h264_mulaw.mkv's CodecPrivate.
        assert_eq!(
            &waveformatex(7, 8000, 1)[..],
            &[
                7, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x40, 0x1f, 0, 0, 1, 0, 8, 0, 0, 0
            ]
        );
        assert_eq!(
            Codec::from_matroska("A_MS/ACM", Some(&waveformatex(6, 8000, 1))),
            Some(Codec::Alaw)
        );
    }

    #[test]
    fn h265_cra_and_idr_are_keyframes() {
        let au = |types: &[u8]| -> Vec<u8> {
            types
                .iter()
                .flat_map(|t| [0, 0, 0, 3, t << 1, 1, 0xaa])
                .collect()
        };
        assert!(h265_irap(&au(&[35, 39, 21]))); // AUD, SEI, CRA
        assert!(h265_irap(&au(&[32, 33, 34, 19]))); // VPS, SPS, PPS, IDR_W_RADL
        assert!(h265_irap(&au(&[16]))); // BLA_W_LP
        assert!(!h265_irap(&au(&[39, 1]))); // SEI, TRAIL_R
        assert!(!h265_irap(&au(&[8]))); // RASL_N
        assert!(!h265_irap(&[0, 0, 0, 9, 42])); // truncated
        assert!(!h265_irap(&[]));
    }

    #[test]
    fn rtp_ticks_to_nanoseconds() {
        assert_eq!(ticks_to_ns(90_000, 90_000), 1_000_000_000);
        assert_eq!(ticks_to_ns(1, 90_000), 11_111);
        assert_eq!(ticks_to_ns(-3_000, 90_000), -33_333_333);
        assert_eq!(ticks_to_ns(1024, 48_000), 21_333_333);
        // 2^32 ticks past the start (one 32-bit wrap at 90 kHz) stays exact.
        assert_eq!(ticks_to_ns(1 << 32, 90_000), 47_721_858_844_444);
        assert_eq!(ticks_to_ns(i64::MAX, 1), i64::MAX);
    }
}
