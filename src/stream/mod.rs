//! The publisher: what a reader thread does with demuxed tracks and frames (one timeline,
//! live-MKV clusters), and what it hands to the event loop.
//!
//! A reader thread never waits for the event loop or a client: it sends immutable,
//! refcounted updates down a channel and wakes the loop. The loop owns the per-stream
//! log ([`live::LiveLog`]) and every client cursor into it.

pub mod cmaf;
pub mod dash;
pub mod hls;
pub mod live;
pub mod rendition;
pub mod segment_file;
pub mod timeline;

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use bytes::Bytes;

use crate::media::{Frame, Track, TrackKind};
use crate::mux::mkv::{self, ClusterWriter, DocType};
use timeline::Timeline;

/// Where an input is in its life, for /status.json and the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputState {
    /// Opening the input, or waiting for its header.
    Starting,
    /// Frames are flowing.
    Live,
    /// A push stream with no pusher connected.
    WaitingForPusher,
    /// The input went away; trying again (the detail says why and when).
    Reconnecting(String),
    /// An on-demand input with no one watching: not connected.
    Idle,
}

impl InputState {
    pub fn label(&self) -> &'static str {
        match self {
            InputState::Starting => "starting",
            InputState::Live => "live",
            InputState::WaitingForPusher => "waiting-for-pusher",
            InputState::Reconnecting(_) => "reconnecting",
            InputState::Idle => "idle",
        }
    }
}

/// When a stream was last wanted by a viewer: written by the event loop (each request
/// naming the stream, and every sweep while live viewers or held requests remain), read
/// by an on-demand input's reader thread, which connects only while someone wants it.
#[derive(Debug)]
pub struct Demand {
    origin: std::time::Instant,
    /// Milliseconds after `origin`, plus one; 0: never.
    last: std::sync::atomic::AtomicU64,
}

impl Demand {
    pub fn new() -> Arc<Demand> {
        Arc::new(Demand {
            origin: std::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last
            .store(ms + 1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether someone asked within `within`.
    pub fn wanted_within(&self, within: std::time::Duration) -> bool {
        match self.last.load(std::sync::atomic::Ordering::Relaxed) {
            0 => false,
            last => {
                let now = self.origin.elapsed().as_millis();
                now.saturating_sub(u128::from(last - 1)) <= within.as_millis()
            }
        }
    }
}

/// The live-MKV headers for one track set.
#[derive(Clone, Debug)]
pub struct Headers {
    pub tracks: Arc<Vec<Track>>,
    pub mkv: Bytes,
    /// Present only when every track is a WebM codec.
    pub webm: Option<Bytes>,
}

/// What a reader thread tells the event loop about its stream.
#[derive(Debug)]
pub enum Update {
    State(InputState),
    /// A new track set. Viewers of the previous one get a clean end of stream.
    Headers(Headers),
    /// One frame as a live-MKV chunk (SimpleBlock, preceded by a Cluster start when it
    /// begins one).
    Chunk {
        bytes: Bytes,
        starts_gop: bool,
        pts_ns: i64,
        /// Write it to viewers now. Audio frames of a stream with video are not urgent:
        /// they go out with the next video frame (or after at most a few tens of ms), which
        /// halves the writes per viewer (the cost of fan-out is per write, not per byte).
        flush: bool,
    },
    /// HLS/DASH: renditions and their parts.
    Cmaf(cmaf::CmafUpdate),
    /// The input ended for good (`error` says why when it failed).
    End {
        error: Option<String>,
    },
    /// Several updates, in order, sent as one message: a reader of unpaced input sends
    /// what one read of its input produced (a few hundred small frames) at once, not a
    /// message per frame. Never nested.
    Batch(Vec<Update>),
}

/// How updates reach the event loop: a channel and a way to wake it.
pub trait Notify: Send {
    fn send(&self, stream: usize, update: Update);
}

/// The channel + mio waker pair the server uses.
pub struct LoopNotify {
    pub tx: SyncSender<(usize, Update)>,
    pub waker: Arc<mio::Waker>,
    /// Set by the first update after the loop drained the channel, cleared by the loop
    /// before it drains: one wake-up per batch, not one per frame (a reader of small
    /// frames otherwise spends its time in eventfd writes and context switches).
    pub wake_pending: Arc<std::sync::atomic::AtomicBool>,
}

impl Notify for LoopNotify {
    fn send(&self, stream: usize, update: Update) {
        // A closed channel means the server is shutting down; there is no one to tell.
        if self.tx.send((stream, update)).is_ok()
            && !self
                .wake_pending
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = self.waker.wake();
        }
    }
}

/// Publisher settings.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Audio-only streams are cut into clusters of this length.
    pub audio_cluster_ms: u64,
    /// CMAF segment and part durations; None leaves HLS/DASH off.
    pub cmaf: Option<cmaf::SegmenterOptions>,
}

/// The reader-thread side of one stream: turns demuxed tracks and frames into updates.
pub struct Publisher {
    stream: usize,
    notify: Box<dyn Notify>,
    options: PublishOptions,
    tracks: Option<Vec<Track>>,
    writer: Option<ClusterWriter>,
    timeline: Timeline,
    live: bool,
    cmaf: Option<cmaf::CmafPipeline>,
    /// The track set changed: build a new CMAF pipeline at the next GOP start.
    cmaf_rebuild: bool,
    /// The next segment's media sequence number: it never goes back, across pipelines.
    next_msn: u64,
    /// Added to the stream timeline to make CMAF media times (see [`RunBases`]).
    media_epoch_ns: i64,
    /// HLS target duration once the first segment chose it: kept by later pipelines.
    target_duration_s: Option<u32>,
    /// How far ahead of real time the first frames are published (a file's prefill).
    clock_lead_ns: i64,
    /// (Unix ns, stream ns): the wall-clock time of a point of the stream timeline, for
    /// program date times, availabilityStartTime and prft. Set at the first frame.
    wall_anchor: Option<(i64, i64)>,
    /// A live input came back after a gap: at the next frame, anchor the wall clock
    /// again and move CMAF media time on by the time lost (see `resume_after_gap`).
    reanchor: bool,
    /// Updates held for one [`Update::Batch`] (see [`Publisher::set_batching`]); None
    /// sends each at once.
    batch: Option<Vec<Update>>,
    /// What the CMAF pipeline made of one frame (kept between frames).
    cmaf_out: Vec<cmaf::CmafUpdate>,
    /// Set by the server when the stream is removed (a configuration reload): the reader
    /// stops at its next read.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// Where a stream's media sequence numbers and CMAF media times begin. Segment and init
/// URLs are named by them and served as immutable, so an HTTP cache in front must never
/// see the same URL twice for different bytes, even across restarts of the stream or the
/// server: both begin at the wall clock of the stream's start. Media times are then
/// roughly Unix time (DASH's availabilityStartTime is near 1970, as in DASH-IF's own
/// live streams), and the first msn is the start time in tenths of a second, which no
/// earlier run of the stream could have reached with segments of a GOP or more.
#[derive(Clone, Copy, Debug)]
pub struct RunBases {
    pub first_msn: u64,
    pub media_epoch_ns: i64,
}

impl RunBases {
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ms = i64::try_from(since.as_millis()).unwrap_or(0);
        RunBases {
            first_msn: u64::try_from(ms / 100).unwrap_or(0),
            media_epoch_ns: ms.saturating_mul(1_000_000),
        }
    }
}

impl Publisher {
    pub fn new(stream: usize, notify: Box<dyn Notify>, options: PublishOptions) -> Self {
        let bases = RunBases::now();
        Publisher {
            stream,
            notify,
            options,
            tracks: None,
            writer: None,
            timeline: Timeline::default(),
            live: false,
            cmaf: None,
            cmaf_rebuild: false,
            next_msn: bases.first_msn,
            media_epoch_ns: bases.media_epoch_ns,
            target_duration_s: None,
            clock_lead_ns: 0,
            wall_anchor: None,
            reanchor: false,
            batch: None,
            cmaf_out: Vec::new(),
            stop: Arc::default(),
        }
    }

    /// The flag that tells this stream's reader to stop (see [`Publisher::stopped`]).
    pub fn set_stop_flag(&mut self, stop: Arc<std::sync::atomic::AtomicBool>) {
        self.stop = stop;
    }

    /// Whether the stream was removed: readers check it before they read again.
    pub fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A clone of the stop flag, for a reader that waits elsewhere (an RTSP session).
    pub fn stop_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.stop.clone()
    }

    /// While on, updates are held and sent together by [`Publisher::flush`] (in order,
    /// as one [`Update::Batch`]): the reader calls it before it may block (reading its
    /// input, pacing). Turning it off sends what is held.
    pub fn set_batching(&mut self, on: bool) {
        if on {
            self.batch.get_or_insert_with(Vec::new);
        } else {
            self.flush();
            self.batch = None;
        }
    }

    /// Sends the updates held since the last flush.
    pub fn flush(&mut self) {
        let Some(batch) = &mut self.batch else {
            return;
        };
        match batch.len() {
            0 => {}
            1 => {
                if let Some(update) = batch.pop() {
                    self.notify.send(self.stream, update);
                }
            }
            n => {
                let updates = std::mem::replace(batch, Vec::with_capacity(n));
                self.notify.send(self.stream, Update::Batch(updates));
            }
        }
    }

    fn send(&mut self, update: Update) {
        match &mut self.batch {
            Some(batch) => batch.push(update),
            None => self.notify.send(self.stream, update),
        }
    }

    /// The first frames are published `lead` ahead of real time (a file's prefill):
    /// their wall-clock times are that much earlier than their arrival.
    pub fn set_clock_lead(&mut self, lead: std::time::Duration) {
        self.clock_lead_ns = i64::try_from(lead.as_nanos()).unwrap_or(i64::MAX);
    }

    pub fn state(&mut self, state: InputState) {
        self.live = state == InputState::Live;
        self.send(Update::State(state));
    }

    /// A new pass over the input begins (a loop, a reconnect, a new pusher): its
    /// timestamps are re-based so the stream's timeline goes on where it was.
    pub fn begin_segment(&mut self) {
        self.timeline.begin_segment();
        if let Some(w) = &mut self.writer {
            w.wait_for_keyframe();
        }
    }

    /// A live input (camera, HTTP pull, pusher) is back after an outage. Live MKV goes on
    /// as after `begin_segment` (the timeline continues, viewers keep their connection).
    /// HLS and DASH get a discontinuity: the current segment ends, the next GOP starts a
    /// new init (EXT-X-DISCONTINUITY, a new DASH Period), its program date time is the
    /// wall clock at its arrival, and CMAF media time jumps by the time lost, so media
    /// time and wall clock stay together across any number of outages (DASH players
    /// find the live edge from the wall clock).
    pub fn resume_after_gap(&mut self) {
        self.begin_segment();
        if self.cmaf.is_some() {
            self.finish_cmaf();
            self.cmaf_rebuild = true;
        }
        self.reanchor = true;
    }

    /// The input declared its tracks. The same tracks as before continue the stream for
    /// everyone; different ones start a new header.
    pub fn tracks(&mut self, tracks: Vec<Track>) {
        if let Some(current) = &self.tracks
            && Track::same_streams(current, &tracks)
        {
            return;
        }
        let webm = tracks
            .iter()
            .all(|t| t.codec.is_webm())
            .then(|| mkv::header(&tracks, DocType::Webm));
        let headers = Headers {
            mkv: mkv::header(&tracks, DocType::Matroska),
            webm,
            tracks: Arc::new(tracks.clone()),
        };
        self.writer = Some(ClusterWriter::new(&tracks, self.options.audio_cluster_ms));
        self.timeline.set_track_count(tracks.len());
        self.tracks = Some(tracks);
        self.finish_cmaf();
        self.cmaf_rebuild = self.options.cmaf.is_some();
        self.send(Update::Headers(headers));
    }

    /// Undecodable input was skipped: wait for the next keyframe.
    pub fn resync(&mut self) {
        if let Some(w) = &mut self.writer {
            w.wait_for_keyframe();
        }
    }

    /// Publishes one frame; returns its time on the output timeline (ns), for pacing.
    pub fn frame(&mut self, frame: Frame) -> Option<i64> {
        let writer = self.writer.as_mut()?;
        let pts = self.timeline.map(frame.track, frame.pts, frame.duration);
        if let Some(ms) = self.timeline.take_jump_report() {
            log::warn!(
                "stream {}: input clock jumped by {ms} ms; re-basing the timeline (logged once)",
                self.stream
            );
        }
        if self.wall_anchor.is_none() || self.reanchor {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            let anchor = (now.saturating_sub(self.clock_lead_ns), pts);
            if let Some(old) = self.wall_anchor.filter(|_| self.reanchor) {
                // Wall time that passed without stream time. Never negative: media
                // times (and the URLs named by them) only go forward.
                let lost = (anchor.0 - anchor.1).saturating_sub(old.0 - old.1);
                self.media_epoch_ns = self.media_epoch_ns.saturating_add(lost.max(0));
            }
            self.wall_anchor = Some(anchor);
            self.reanchor = false;
        }
        let pts_ms = pts.div_euclid(mkv::TIMESTAMP_SCALE_NS as i64);
        if let Some(written) = writer.write(frame.track, pts_ms, frame.keyframe, &frame.data) {
            if !self.live {
                self.state(InputState::Live);
            }
            if written.starts_gop && self.cmaf_rebuild {
                self.start_cmaf(frame.track, &frame.data);
            }
            if let Some(pipeline) = &mut self.cmaf {
                let mut updates = std::mem::take(&mut self.cmaf_out);
                pipeline.push_into(
                    frame.track,
                    pts,
                    frame.keyframe,
                    frame.data.clone(),
                    &mut updates,
                );
                self.send_cmaf(&mut updates);
                self.cmaf_out = updates;
            }
            let flush = self.tracks.as_ref().is_none_or(|tracks| {
                tracks
                    .get(frame.track)
                    .is_none_or(|t| t.kind() == TrackKind::Video)
                    || !tracks.iter().any(|t| t.kind() == TrackKind::Video)
            });
            self.send(Update::Chunk {
                bytes: written.bytes,
                starts_gop: written.starts_gop,
                pts_ns: pts,
                flush,
            });
        }
        Some(pts)
    }

    /// Sends `updates` (leaving it empty).
    fn send_cmaf(&mut self, updates: &mut Vec<cmaf::CmafUpdate>) {
        for u in updates.drain(..) {
            match &u {
                cmaf::CmafUpdate::Part { msn, .. } => self.next_msn = self.next_msn.max(msn + 1),
                cmaf::CmafUpdate::TargetDuration(t) => self.target_duration_s = Some(*t),
                _ => {}
            }
            self.send(Update::Cmaf(u));
        }
    }

    fn start_cmaf(&mut self, track: usize, keyframe: &[u8]) {
        self.cmaf_rebuild = false;
        let (Some(options), Some(tracks)) = (self.options.cmaf, &self.tracks) else {
            return;
        };
        let bases = RunBases {
            first_msn: self.next_msn,
            media_epoch_ns: self.media_epoch_ns,
        };
        let (built, warnings) = cmaf::CmafPipeline::new(
            tracks,
            track,
            keyframe,
            options,
            bases,
            self.target_duration_s,
            self.wall_anchor.unwrap_or_default(),
        );
        for w in warnings {
            log::warn!("stream {}: {w}", self.stream);
        }
        match built {
            Some((pipeline, update)) => {
                self.cmaf = Some(pipeline);
                self.send(Update::Cmaf(update));
            }
            // Every track was left out: say so, or playlist requests would wait for
            // renditions that never come.
            None => self.send(Update::Cmaf(cmaf::CmafUpdate::NoRenditions)),
        }
    }

    /// Closes the current CMAF pipeline's last parts (the track set changed or the input
    /// ended).
    fn finish_cmaf(&mut self) {
        if let Some(mut pipeline) = self.cmaf.take() {
            let mut updates = pipeline.finish();
            // The next pipeline goes on; only the input's end ends the renditions.
            updates.retain(|u| !matches!(u, cmaf::CmafUpdate::End));
            self.send_cmaf(&mut updates);
        }
    }

    pub fn end(&mut self, error: Option<String>) {
        self.finish_cmaf();
        self.send(Update::Cmaf(cmaf::CmafUpdate::End));
        self.send(Update::End { error });
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<Update>>>);

    impl Notify for Collect {
        fn send(&self, _stream: usize, update: Update) {
            self.0.lock().unwrap().push(update);
        }
    }

    fn track(codec: Codec) -> Track {
        Track {
            codec,
            codec_id: "X".into(),
            codec_private: None,
            video: None,
            audio: None,
            default_duration_ns: None,
            codec_delay_ns: None,
            seek_pre_roll_ns: None,
            language: None,
        }
    }

    fn frame(track: usize, ms: i64, keyframe: bool) -> Frame {
        Frame {
            track,
            pts: ms * 1_000_000,
            duration: None,
            keyframe,
            data: Bytes::from(vec![ms as u8; 10]),
        }
    }

    /// What was sent, batches taken apart: (kind, chunk bytes).
    fn flat(updates: &[Update]) -> Vec<(&'static str, Vec<u8>)> {
        let mut out = Vec::new();
        for u in updates {
            match u {
                Update::Batch(inner) => {
                    assert!(!inner.iter().any(|u| matches!(u, Update::Batch(_))));
                    out.extend(flat(inner));
                }
                Update::State(_) => out.push(("state", vec![])),
                Update::Headers(h) => out.push(("headers", h.mkv.to_vec())),
                Update::Chunk { bytes, .. } => out.push(("chunk", bytes.to_vec())),
                Update::Cmaf(_) => out.push(("cmaf", vec![])),
                Update::End { .. } => out.push(("end", vec![])),
            }
        }
        out
    }

    /// Batching changes how updates travel, not what they are or their order; nothing
    /// is held past a flush.
    #[test]
    fn a_batch_holds_the_same_updates_in_the_same_order() {
        let options = PublishOptions {
            audio_cluster_ms: 2000,
            cmaf: None,
        };
        let run = |batching: bool| {
            let collect = Collect::default();
            let mut p = Publisher::new(0, Box::new(collect.clone()), options.clone());
            p.set_batching(batching);
            p.tracks(vec![track(Codec::H264), track(Codec::Aac)]);
            for i in 0..100 {
                p.frame(frame(usize::from(i % 3 == 0), i * 20, i % 50 == 1));
                if i == 60 && batching {
                    let before = collect.0.lock().unwrap().len();
                    p.flush();
                    let sent = collect.0.lock().unwrap();
                    assert_eq!(sent.len(), before + 1);
                    assert!(matches!(sent.last(), Some(Update::Batch(_))));
                }
            }
            if batching {
                let sent = collect.0.lock().unwrap().len();
                p.set_batching(false);
                assert_eq!(collect.0.lock().unwrap().len(), sent + 1);
            }
            p.end(None);
            let updates = std::mem::take(&mut *collect.0.lock().unwrap());
            flat(&updates)
        };
        let direct = run(false);
        assert!(direct.iter().filter(|(k, _)| *k == "chunk").count() > 90);
        assert_eq!(run(true), direct);
    }

    /// Tracks HLS/DASH cannot carry at all (an MJPEG camera): the server is told there
    /// will be no rendition, once per track set, while live MKV gets every frame.
    #[test]
    fn a_stream_of_mjpeg_only_says_it_makes_no_renditions() {
        let collect = Collect::default();
        let options = PublishOptions {
            audio_cluster_ms: 2000,
            cmaf: Some(cmaf::SegmenterOptions {
                segment_ns: 2_000_000_000,
                part_ns: 200_000_000,
            }),
        };
        let mut p = Publisher::new(0, Box::new(collect.clone()), options);
        p.tracks(vec![track(Codec::Mjpeg)]);
        for i in 0..30 {
            p.frame(frame(0, i * 100, true));
        }
        p.end(None);
        let updates = collect.0.lock().unwrap();
        let cmaf: Vec<&cmaf::CmafUpdate> = updates
            .iter()
            .filter_map(|u| match u {
                Update::Cmaf(c) => Some(c),
                _ => None,
            })
            .collect();
        assert!(
            matches!(
                cmaf[..],
                [cmaf::CmafUpdate::NoRenditions, cmaf::CmafUpdate::End]
            ),
            "{cmaf:?}"
        );
        let chunks = updates
            .iter()
            .filter(|u| {
                matches!(
                    u,
                    Update::Chunk {
                        starts_gop: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(chunks, 30, "every JPEG starts a GOP");
    }
}
