//! The publisher: what a reader thread does with demuxed tracks and frames (one timeline,
//! live-MKV clusters), and what it hands to the event loop.
//!
//! A reader thread never waits for the event loop or a client: it sends immutable,
//! refcounted updates down a channel and wakes the loop. The loop owns the per-stream
//! log ([`live::LiveLog`]) and every client cursor into it.

pub mod cmaf;
pub mod hls;
pub mod live;
pub mod rendition;
pub mod timeline;

use std::sync::Arc;
use std::sync::mpsc::Sender;

use bytes::Bytes;

use crate::media::{Frame, Track};
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
}

impl InputState {
    pub fn label(&self) -> &'static str {
        match self {
            InputState::Starting => "starting",
            InputState::Live => "live",
            InputState::WaitingForPusher => "waiting-for-pusher",
            InputState::Reconnecting(_) => "reconnecting",
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
    },
    /// The input ended for good (`error` says why when it failed).
    End {
        error: Option<String>,
    },
}

/// How updates reach the event loop: a channel and a way to wake it.
pub trait Notify: Send {
    fn send(&self, stream: usize, update: Update);
}

/// The channel + mio waker pair the server uses.
pub struct LoopNotify {
    pub tx: Sender<(usize, Update)>,
    pub waker: Arc<mio::Waker>,
}

impl Notify for LoopNotify {
    fn send(&self, stream: usize, update: Update) {
        // A closed channel means the server is shutting down; there is no one to tell.
        if self.tx.send((stream, update)).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Publisher settings.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Audio-only streams are cut into clusters of this length.
    pub audio_cluster_ms: u64,
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
}

impl Publisher {
    pub fn new(stream: usize, notify: Box<dyn Notify>, options: PublishOptions) -> Self {
        Publisher {
            stream,
            notify,
            options,
            tracks: None,
            writer: None,
            timeline: Timeline::default(),
            live: false,
        }
    }

    pub fn state(&mut self, state: InputState) {
        self.live = state == InputState::Live;
        self.notify.send(self.stream, Update::State(state));
    }

    /// A new pass over the input begins (a loop, a reconnect, a new pusher): its
    /// timestamps are re-based so the stream's timeline goes on where it was.
    pub fn begin_segment(&mut self) {
        self.timeline.begin_segment();
        if let Some(w) = &mut self.writer {
            w.wait_for_keyframe();
        }
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
        self.notify.send(self.stream, Update::Headers(headers));
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
        let pts_ms = pts.div_euclid(mkv::TIMESTAMP_SCALE_NS as i64);
        if let Some(written) = writer.write(frame.track, pts_ms, frame.keyframe, &frame.data) {
            if !self.live {
                self.state(InputState::Live);
            }
            self.notify.send(
                self.stream,
                Update::Chunk {
                    bytes: written.bytes,
                    starts_gop: written.starts_gop,
                    pts_ns: pts,
                },
            );
        }
        Some(pts)
    }

    pub fn end(&mut self, error: Option<String>) {
        self.notify.send(self.stream, Update::End { error });
    }
}
