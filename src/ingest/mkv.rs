//! A push-fed Matroska/WebM demuxer for live, non-seekable, untrusted input.
//!
//! Bytes go in with [`MkvDemuxer::feed`] in whatever pieces the network delivers; tracks and
//! frames come out of [`MkvDemuxer::next_event`]. The demuxer never seeks: it ignores
//! SeekHead and Cues, and reads Segments and Clusters of unknown size (any all-ones size,
//! from the 1-byte `FF` to the 8-byte `01 FF FF FF FF FF FF FF`).
//!
//! # Memory
//!
//! The demuxer holds at most about one element plus one read. Only the header elements
//! (EBML header, Info, Tracks: together at most [`DemuxLimits::max_header_size`]) and the
//! blocks of a Cluster (SimpleBlock, BlockGroup: each at most
//! [`DemuxLimits::max_element_size`]) are buffered whole. Everything else (SeekHead, Cues,
//! Tags, Chapters, Attachments, Void, CRC-32) is dropped as it arrives, so skipping an
//! element never allocates its size. A size from the wire is compared with its limit before
//! anything is reserved for it.
//!
//! # Timestamps and lacing
//!
//! A frame's pts is (Cluster Timestamp + the block's signed 16-bit relative timestamp) ×
//! TimestampScale, in nanoseconds, computed in 128 bits and saturated to `i64`. Matroska
//! stores one timestamp per block, so the k-th frame of a laced block (Xiph, EBML or
//! fixed-size lacing) gets block pts + k × DefaultDuration when the track declares a
//! DefaultDuration, and the block pts otherwise. Frame durations come from BlockDuration
//! (scaled, unlaced blocks only) or DefaultDuration.
//!
//! Keyframes: the SimpleBlock keyframe flag; a Block in a BlockGroup is a keyframe iff the
//! group has no ReferenceBlock; every audio frame is a keyframe.
//!
//! # Tracks
//!
//! Audio and video tracks are reported in the order of their TrackEntries; [`Frame::track`]
//! indexes that list. Other tracks (subtitles, buttons, metadata) are left out and their
//! blocks skipped, as are blocks whose track number no TrackEntry declared. An audio or
//! video track with a codec muxcast does not carry is an error: the stream refuses to
//! start. Header-stripping compression (ContentCompAlgo 3) is undone by putting the
//! stripped bytes back in front of every frame; any other compression, and encryption, is
//! an error.
//!
//! # Corrupt input
//!
//! Before the first Tracks, bytes that are not the Matroska structure are a fatal
//! [`DemuxError`]. After it, the demuxer reports [`DemuxEvent::Resync`] and scans forward
//! for the next Cluster ID (`1F 43 B6 75`) or EBML header ID (`1A 45 DF A3`), keeping only
//! three bytes while it scans. Inside a Cluster only the elements Matroska defines for a
//! Cluster are accepted: an unknown ID there is taken for garbage, because live input is
//! far more likely to be damaged than to carry a future Cluster child, and skipping a
//! garbage "element" by its garbage size would silently swallow good clusters. In a
//! Segment, an unknown element with a 4-byte ID (the class of every Segment child) is
//! skipped by its size; any other unknown ID there is garbage. Unknown children of the
//! buffered elements (Info, Tracks, BlockGroup) are ignored.
//!
//! # End of input
//!
//! [`MkvDemuxer::finish`] flushes what is complete. A partial last element is dropped
//! without an error: a live pusher that disconnects usually does so mid-block, and the
//! frames before it are good. Input that ends before the first Tracks is an error.
//!
//! # Why not `ebml_iterable::TagDecoder`
//!
//! ebml-iterable 0.7.1's push decoder was tried first (webm-iterable 0.7.1's `MatroskaSpec`,
//! fed 7-byte and 64 KiB chunks, `InvalidTagIds` allowed). It reads unknown-size Segments
//! and Clusters, a CRC-32 first child and a second EBML header correctly, but:
//!
//! - it cannot skip an element by size: every non-master element must be whole in the
//!   caller's buffer. A 20 MiB Void between Tracks and the first Cluster was buffered whole
//!   (20,971,567 bytes held) without a limit, and with `set_max_allowable_tag_size(16 MiB)`
//!   the valid stream failed with `InvalidTagSize { tag_id: 0xEC, size: 20971520 }`;
//! - the size limit also applies to master elements it never buffers: a known-size 20 MB
//!   Segment failed with `InvalidTagSize { position: 19, tag_id: 0x18538067 }`;
//! - `try_recover` hangs: after a SimpleBlock, the bytes `00 13 99 FE 42 00 07` give
//!   `InvalidTagSize { tag_id: 0, size: 60423746 }`, and `try_recover` then spins forever at
//!   100 % CPU (its loop does not advance when a header parses but fails validation);
//! - recovery resumes at any header that validates rather than at a Cluster or EBML
//!   header, keeping the stale element stack; and with unknown IDs allowed (needed to
//!   skip them), 300 bytes of `0x55` inside an unknown-size Cluster raised no error: the
//!   decoder returned `Ok(None)` holding the garbage and the whole next Cluster, which
//!   never came out;
//! - webm-iterable does not re-export it (a second direct dependency), and its block
//!   helpers panic on corrupt lacing, so the block parser had to be written anyway.
//!
//! The EBML framing this demuxer needs is a VINT reader and a three-level state machine
//! (top level, Segment, Cluster); it is written here (`mkv/ebml.rs`, `mkv/block.rs`).

mod block;
mod ebml;
mod tracks;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use crate::media::{Frame, Track, TrackKind};
use ebml::{ElementHeader, id};
use tracks::{DEFAULT_TIMESTAMP_SCALE, TrackState};

/// Bounds on what untrusted input can make the demuxer hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemuxLimits {
    /// The largest block (SimpleBlock or BlockGroup) or other element buffered whole inside
    /// a Cluster. Default 16 MiB.
    pub max_element_size: usize,
    /// The EBML header, Info and Tracks of one Segment together. Default 1 MiB.
    pub max_header_size: usize,
    /// The most TrackEntries a Tracks element may hold. Default 32.
    pub max_tracks: usize,
    /// The largest Void or unknown element skipped (not buffered) at Segment level; a
    /// larger one is taken for corruption. Default 256 MiB.
    pub max_skip_size: usize,
}

impl Default for DemuxLimits {
    fn default() -> Self {
        DemuxLimits {
            max_element_size: 16 << 20,
            max_header_size: 1 << 20,
            max_tracks: 32,
            max_skip_size: 256 << 20,
        }
    }
}

/// What the demuxer found in the input.
#[derive(Clone, Debug, PartialEq)]
pub enum DemuxEvent {
    /// The Tracks of a Segment are complete. Emitted again when a new EBML header + Segment
    /// starts in the same byte stream (concatenated streams, a pusher reconnecting).
    Tracks(Vec<Track>),
    /// One frame. `Frame.track` is the index into the last Tracks list.
    Frame(Frame),
    /// Undecodable bytes were skipped and the demuxer resynchronised at the next Cluster or
    /// EBML header; `skipped` bytes were dropped. Callers must wait for the next keyframe.
    Resync { skipped: u64, reason: String },
}

/// Why the input cannot be demuxed. Once returned, every later call returns it again.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
pub enum DemuxError {
    #[error("not a Matroska stream: {0}")]
    NotMatroska(String),
    #[error("element 0x{id:X} at byte {offset} claims {size} bytes, more than the {limit} allowed")]
    TooLarge {
        id: u32,
        offset: u64,
        size: u64,
        limit: usize,
    },
    #[error(
        "track {track}: unsupported codec {codec_id} (muxcast carries H.264, H.265, VP8, VP9, \
         AV1, AAC, Opus, Vorbis, FLAC, MP3, PCM and G.711)"
    )]
    UnsupportedCodec { track: u64, codec_id: String },
    #[error("track {track}: {what} is not supported")]
    UnsupportedEncoding { track: u64, what: String },
    #[error("invalid Matroska header: {0}")]
    InvalidHeader(String),
    #[error("more than {limit} tracks")]
    TooManyTracks { limit: usize },
    #[error("the input ended at byte {offset}, before the tracks were complete")]
    Truncated { offset: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Segment,
    Cluster,
}

/// A master element being read child by child.
#[derive(Clone, Copy, Debug)]
struct Open {
    level: Level,
    /// Stream offset of its end; `None` for an unknown size.
    end: Option<u64>,
}

/// Scanning for a Cluster or EBML header after garbage.
#[derive(Debug)]
struct Scan {
    skipped: u64,
    reason: String,
}

/// What one step of parsing achieved.
enum Step {
    /// Something happened; step again.
    Continue,
    /// The buffer holds no complete element: more input is needed.
    NeedMore,
}

/// The push-fed demuxer. See the module documentation.
pub struct MkvDemuxer {
    limits: DemuxLimits,
    /// Input not yet consumed.
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    pos: u64,
    stack: Vec<Open>,
    /// Bytes of a skipped element still to drop.
    skip: u64,
    scan: Option<Scan>,
    pending: VecDeque<DemuxEvent>,
    /// The tracks of the current Segment, in report order.
    tracks: Vec<TrackState>,
    timestamp_scale: u64,
    cluster_timestamp: Option<u64>,
    /// Header bytes buffered for the current EBML header + Segment.
    header_bytes: usize,
    /// The EBML header's share of `header_bytes`, kept across a Segment start.
    ebml_header_bytes: usize,
    /// A Tracks event has been emitted: from now on garbage means Resync, not an error.
    tracks_seen: bool,
    eof: bool,
    failed: Option<DemuxError>,
    /// Scratch for the frame ranges of one block.
    laces: Vec<Range<usize>>,
}

impl MkvDemuxer {
    pub fn new(limits: DemuxLimits) -> Self {
        MkvDemuxer {
            limits,
            buf: BytesMut::new(),
            pos: 0,
            stack: Vec::new(),
            skip: 0,
            scan: None,
            pending: VecDeque::new(),
            tracks: Vec::new(),
            timestamp_scale: DEFAULT_TIMESTAMP_SCALE,
            cluster_timestamp: None,
            header_bytes: 0,
            ebml_header_bytes: 0,
            tracks_seen: false,
            eof: false,
            failed: None,
            laces: Vec::new(),
        }
    }

    /// The tracks of the current Segment (empty before the first Tracks).
    pub fn tracks(&self) -> Vec<Track> {
        self.tracks.iter().map(|t| t.track.clone()).collect()
    }

    /// Appends input bytes. Memory stays bounded as long as the caller drains
    /// [`Self::next_event`] between feeds: the demuxer then never holds more than about one
    /// element plus one read. Bytes fed after [`Self::finish`] are ignored.
    pub fn feed(&mut self, data: &[u8]) {
        if self.eof || self.failed.is_some() {
            return;
        }
        // While skipping or scanning, bytes can be dropped before they are ever stored.
        let mut data = data;
        if self.skip > 0 && self.buf.is_empty() {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(data.len());
            data = &data[n..];
            self.skip -= n as u64;
            self.pos = self.pos.saturating_add(n as u64);
        }
        self.buf.extend_from_slice(data);
    }

    /// The next event, or `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<DemuxEvent>, DemuxError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            match self.step() {
                Ok(Step::Continue) => {}
                Ok(Step::NeedMore) => return Ok(None),
                Err(e) => {
                    self.failed = Some(e.clone());
                    self.buf = BytesMut::new();
                    return Err(e);
                }
            }
        }
    }

    /// The input has ended: returns what is left, then `Ok(None)` when done.
    ///
    /// A partial last element (a block cut off mid-write) is dropped without an error. Input
    /// that ended before the first Tracks is [`DemuxError::Truncated`] (or the error the
    /// bytes that did arrive deserve). Input that ended while scanning for a Cluster after
    /// garbage yields one last [`DemuxEvent::Resync`] counting the dropped tail.
    pub fn finish(&mut self) -> Result<Option<DemuxEvent>, DemuxError> {
        self.eof = true;
        if let Some(ev) = self.next_event()? {
            return Ok(Some(ev));
        }
        if let Some(scan) = self.scan.take() {
            let skipped = scan.skipped.saturating_add(self.buf.len() as u64);
            self.consume(self.buf.len());
            return Ok(Some(DemuxEvent::Resync {
                skipped,
                reason: format!(
                    "{}; the input ended before a Cluster or EBML header",
                    scan.reason
                ),
            }));
        }
        if !self.tracks_seen {
            let e = DemuxError::Truncated {
                offset: self.pos.saturating_add(self.buf.len() as u64),
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        if !self.buf.is_empty() {
            log::debug!(
                "mkv: input ended inside an element at byte {}; dropped {} bytes",
                self.pos,
                self.buf.len()
            );
            self.consume(self.buf.len());
        }
        Ok(None)
    }

    /// Drops `n` buffered bytes.
    fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        self.pos = self.pos.saturating_add(n as u64);
    }

    fn step(&mut self) -> Result<Step, DemuxError> {
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            self.consume(n);
            self.skip -= n as u64;
            if self.skip > 0 {
                return Ok(Step::NeedMore);
            }
        }
        if self.scan.is_some() {
            return Ok(self.scan_step());
        }
        // Close the masters whose known size has been read.
        while let Some(top) = self.stack.last() {
            match top.end {
                Some(end) if self.pos >= end => self.pop(),
                _ => break,
            }
        }
        if self.pos == 0 && self.stack.is_empty() {
            // Judge the first four bytes together, so that the message does not depend on
            // how the input was split into reads.
            if self.buf.len() < 4 && !self.eof {
                return Ok(Step::NeedMore);
            }
            let n = self.buf.len().min(4);
            if self.buf[..n] != id::EBML.to_be_bytes()[..n] {
                return Err(DemuxError::NotMatroska(format!(
                    "it starts with {}, not an EBML header (1A 45 DF A3)",
                    hex_prefix(&self.buf, 4)
                )));
            }
        }
        let header = match ebml::read_header(&self.buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Step::NeedMore),
            Err(e) => {
                let why = format!("{e} at byte {}", self.pos);
                return self.corrupt(why, true);
            }
        };
        match self.stack.last().map(|o| o.level) {
            None => self.top_level(header),
            Some(Level::Segment) => self.in_segment(header),
            Some(Level::Cluster) => self.in_cluster(header),
        }
    }

    fn pop(&mut self) {
        if let Some(Open {
            level: Level::Cluster,
            ..
        }) = self.stack.pop()
        {
            self.cluster_timestamp = None;
        }
    }

    fn top_level(&mut self, h: ElementHeader) -> Result<Step, DemuxError> {
        match h.id {
            id::EBML => {
                self.tracks.clear();
                self.header_bytes = 0;
                let body = match self.take_header_element(h)? {
                    Ok(body) => body,
                    Err(step) => return Ok(step),
                };
                tracks::parse_ebml_header(&body)?;
                self.ebml_header_bytes = self.header_bytes;
                Ok(Step::Continue)
            }
            id::SEGMENT => {
                let end = self.child_end(h);
                self.consume(h.len);
                self.stack.push(Open {
                    level: Level::Segment,
                    end,
                });
                self.tracks.clear();
                self.timestamp_scale = DEFAULT_TIMESTAMP_SCALE;
                self.header_bytes = self.ebml_header_bytes;
                self.ebml_header_bytes = 0;
                Ok(Step::Continue)
            }
            id::VOID | id::CRC32 => self.skip_element(h, Some(self.limits.max_element_size)),
            // A Cluster outside any Segment (after a known-size Segment whose size was
            // wrong): the scan restarts right here and reopens a Segment.
            other => {
                let why = format!("element 0x{other:X} outside a Segment at byte {}", self.pos);
                self.corrupt(why, other != id::CLUSTER)
            }
        }
    }

    fn in_segment(&mut self, h: ElementHeader) -> Result<Step, DemuxError> {
        match h.id {
            // A new stream begins: this Segment ends here, whatever its size said.
            id::EBML | id::SEGMENT => {
                self.pop();
                Ok(Step::Continue)
            }
            id::INFO => {
                let body = match self.take_header_element(h)? {
                    Ok(body) => body,
                    Err(step) => return Ok(step),
                };
                self.timestamp_scale = tracks::parse_info(&body)?;
                Ok(Step::Continue)
            }
            id::TRACKS => {
                let body = match self.take_header_element(h)? {
                    Ok(body) => body,
                    Err(step) => return Ok(step),
                };
                self.tracks = tracks::parse_tracks(&body, self.limits.max_tracks)?;
                self.tracks_seen = true;
                self.pending.push_back(DemuxEvent::Tracks(self.tracks()));
                Ok(Step::Continue)
            }
            id::CLUSTER => {
                let end = self.child_end(h);
                self.consume(h.len);
                self.stack.push(Open {
                    level: Level::Cluster,
                    end,
                });
                self.cluster_timestamp = None;
                Ok(Step::Continue)
            }
            id::SEEK_HEAD | id::CUES | id::ATTACHMENTS | id::CHAPTERS | id::TAGS | id::CRC32 => {
                self.skip_element(h, None)
            }
            // Every Segment child Matroska defines has a 4-byte ID: an unknown one of that
            // class is skipped by its size, as EBML asks; shorter IDs here are garbage.
            // Padding and unknown elements are skipped up to `max_skip_size`: a larger
            // size is a corrupt size field (or garbage that reads as an ID), and
            // skipping it would swallow the rest of a live input without a word
            // (tests/chaos.rs): resynchronise at the next Cluster instead.
            id::VOID => self.skip_element(h, Some(self.limits.max_skip_size)),
            other if other >= 0x1000_0000 => {
                log::debug!(
                    "mkv: skipping unknown element 0x{other:X} at byte {}",
                    self.pos
                );
                self.skip_element(h, Some(self.limits.max_skip_size))
            }
            other => {
                let why = format!(
                    "unexpected element 0x{other:X} in a Segment at byte {}",
                    self.pos
                );
                self.corrupt(why, true)
            }
        }
    }

    fn in_cluster(&mut self, h: ElementHeader) -> Result<Step, DemuxError> {
        match h.id {
            id::EBML | id::SEGMENT => {
                self.pop();
                Ok(Step::Continue)
            }
            other if ebml::is_level1(other) => {
                self.pop();
                Ok(Step::Continue)
            }
            id::TIMESTAMP => {
                let body = match self.take_cluster_element(h)? {
                    Ok(body) => body,
                    Err(step) => return Ok(step),
                };
                match ebml::uint(h.id, &body) {
                    Ok(ts) => {
                        self.cluster_timestamp = Some(ts);
                        Ok(Step::Continue)
                    }
                    Err(why) => self.corrupt(why, false),
                }
            }
            id::SIMPLE_BLOCK | id::BLOCK_GROUP => self.block(h),
            id::SILENT_TRACKS
            | id::POSITION
            | id::PREV_SIZE
            | id::ENCRYPTED_BLOCK
            | id::VOID
            | id::CRC32 => self.skip_element(h, Some(self.limits.max_element_size)),
            other => {
                let why = format!(
                    "unexpected element 0x{other:X} in a Cluster at byte {}",
                    self.pos
                );
                self.corrupt(why, true)
            }
        }
    }

    /// The end offset of a child master, or `None` for an unknown size. A known-size
    /// parent it overruns is taken to have been written with a wrong size.
    fn child_end(&mut self, h: ElementHeader) -> Option<u64> {
        let end = h
            .size
            .and_then(|s| self.pos.checked_add(h.len as u64)?.checked_add(s));
        if let (Some(end), Some(parent)) = (end, self.stack.last_mut())
            && parent.end.is_some_and(|pe| end > pe)
        {
            parent.end = None;
        }
        if h.size.is_some() && end.is_none() {
            // Offsets past 2^64: as good as unknown.
            return None;
        }
        end
    }

    /// Checks a non-master element's size against its parent and a limit. `Err(Some(step))`
    /// says what to do instead of reading it.
    fn check_size(
        &mut self,
        h: ElementHeader,
        limit: Option<usize>,
    ) -> Result<Result<u64, Step>, DemuxError> {
        let Some(size) = h.size else {
            let why = format!(
                "element 0x{:X} at byte {} has an unknown size (only Segment and Cluster may)",
                h.id, self.pos
            );
            return self.corrupt(why, true).map(Err);
        };
        if let Some(limit) = limit
            && size > limit as u64
        {
            let e = DemuxError::TooLarge {
                id: h.id,
                offset: self.pos,
                size,
                limit,
            };
            if !self.tracks_seen {
                return Err(e);
            }
            return self.corrupt(e.to_string(), true).map(Err);
        }
        let end = self.pos.saturating_add(h.len as u64).saturating_add(size);
        if let Some(parent) = self.stack.last_mut()
            && let Some(parent_end) = parent.end
            && end > parent_end
        {
            if parent.level == Level::Cluster {
                let why = format!(
                    "element 0x{:X} at byte {} runs past the end of its Cluster",
                    h.id, self.pos
                );
                return self.corrupt(why, true).map(Err);
            }
            parent.end = None;
        }
        Ok(Ok(size))
    }

    /// Drops an element as it arrives, without buffering it.
    fn skip_element(&mut self, h: ElementHeader, limit: Option<usize>) -> Result<Step, DemuxError> {
        let size = match self.check_size(h, limit)? {
            Ok(size) => size,
            Err(step) => return Ok(step),
        };
        self.consume(h.len);
        self.skip = size;
        Ok(Step::Continue)
    }

    /// Takes the body of an element once it is all buffered; otherwise says what to do
    /// instead (wait for more bytes, or go on scanning after finding it corrupt).
    fn take_body(
        &mut self,
        h: ElementHeader,
        limit: usize,
    ) -> Result<Result<Bytes, Step>, DemuxError> {
        let size = match self.check_size(h, Some(limit))? {
            Ok(size) => size as usize, // bounded by `limit`
            Err(step) => return Ok(Err(step)),
        };
        let total = h.len + size;
        if self.buf.len() < total {
            // Bounded by the limit just checked: reserve once instead of regrowing.
            self.buf.reserve(total - self.buf.len());
            return Ok(Err(Step::NeedMore));
        }
        let mut element = self.buf.split_to(total);
        self.pos = self.pos.saturating_add(total as u64);
        element.advance(h.len);
        Ok(Ok(element.freeze()))
    }

    /// EBML header, Info, Tracks: bounded together by `max_header_size`, and fatal when too
    /// large whether or not tracks were seen (the limit is a setting, not garbage).
    fn take_header_element(&mut self, h: ElementHeader) -> Result<Result<Bytes, Step>, DemuxError> {
        let limit = self
            .limits
            .max_header_size
            .saturating_sub(self.header_bytes);
        if let Some(size) = h.size
            && size > limit as u64
        {
            return Err(DemuxError::TooLarge {
                id: h.id,
                offset: self.pos,
                size,
                limit,
            });
        }
        let body = self.take_body(h, limit)?;
        if let Ok(b) = &body {
            self.header_bytes = self.header_bytes.saturating_add(h.len + b.len());
        }
        Ok(body)
    }

    fn take_cluster_element(
        &mut self,
        h: ElementHeader,
    ) -> Result<Result<Bytes, Step>, DemuxError> {
        self.take_body(h, self.limits.max_element_size)
    }

    /// Enters scan mode after garbage, or fails if no Tracks were seen yet.
    /// `skip_first` drops the byte at the current position first, so that a scan started
    /// at a bad Cluster or EBML ID does not find that same ID again.
    fn corrupt(&mut self, reason: String, skip_first: bool) -> Result<Step, DemuxError> {
        if !self.tracks_seen {
            return Err(DemuxError::NotMatroska(reason));
        }
        log::debug!("mkv: {reason}; scanning for the next Cluster");
        let mut skipped = 0;
        if skip_first && !self.buf.is_empty() {
            self.consume(1);
            skipped = 1;
        }
        self.skip = 0;
        self.scan = Some(Scan { skipped, reason });
        Ok(Step::Continue)
    }

    fn scan_step(&mut self) -> Step {
        const CLUSTER: [u8; 4] = id::CLUSTER.to_be_bytes();
        const EBML: [u8; 4] = id::EBML.to_be_bytes();
        let found = self.buf.windows(4).position(|w| w == CLUSTER || w == EBML);
        let Some(i) = found else {
            // Keep the last three bytes: they may begin an ID.
            let drop = self.buf.len().saturating_sub(3);
            self.consume(drop);
            if let Some(scan) = &mut self.scan {
                scan.skipped = scan.skipped.saturating_add(drop as u64);
            }
            return Step::NeedMore;
        };
        let is_cluster = self.buf[i..i + 4] == CLUSTER;
        self.consume(i);
        let Some(scan) = self.scan.take() else {
            return Step::Continue;
        };
        if is_cluster {
            // The Segment's size can no longer be trusted: read it as unknown.
            self.stack.clear();
            self.stack.push(Open {
                level: Level::Segment,
                end: None,
            });
        } else {
            self.stack.clear();
        }
        self.cluster_timestamp = None;
        self.pending.push_back(DemuxEvent::Resync {
            skipped: scan.skipped.saturating_add(i as u64),
            reason: scan.reason,
        });
        Step::Continue
    }

    /// A SimpleBlock or BlockGroup: validated in place, then split off the buffer so its
    /// frames share its bytes.
    fn block(&mut self, h: ElementHeader) -> Result<Step, DemuxError> {
        let size = match self.check_size(h, Some(self.limits.max_element_size))? {
            Ok(size) => size as usize, // bounded by max_element_size
            Err(step) => return Ok(step),
        };
        let total = h.len + size;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(Step::NeedMore);
        }
        let group = if h.id == id::BLOCK_GROUP {
            match read_block_group(&self.buf[h.len..total]) {
                Ok(Some(g)) => g,
                Ok(None) => {
                    log::debug!("mkv: BlockGroup without a Block at byte {}", self.pos);
                    self.consume(total);
                    return Ok(Step::Continue);
                }
                Err(why) => {
                    let why = format!("BlockGroup at byte {}: {why}", self.pos);
                    return self.corrupt(why, true);
                }
            }
        } else {
            BlockGroup {
                block: 0..size,
                duration: None,
                referenced: false,
            }
        };
        let block_range = h.len + group.block.start..h.len + group.block.end;
        let (block_duration, referenced) = (group.duration, group.referenced);

        let header = match block::parse(&self.buf[block_range.clone()], &mut self.laces) {
            Ok(header) => header,
            Err(why) => {
                let why = format!("block at byte {}: {why}", self.pos);
                return self.corrupt(why, true);
            }
        };
        let Some(index) = self.tracks.iter().position(|t| t.number == header.track) else {
            // Not an audio/video track we report (or no Tracks yet): skip it.
            self.consume(total);
            return Ok(Step::Continue);
        };
        let Some(cluster_ts) = self.cluster_timestamp else {
            let why = format!("block before the Cluster Timestamp at byte {}", self.pos);
            return self.corrupt(why, true);
        };

        let element = self.buf.split_to(total);
        self.pos = self.pos.saturating_add(total as u64);
        // One frame (no lacing, the common case) is the element cut down to it: no
        // reference counting for intermediate slices.
        let (mut single, block_body) = match self.laces.as_slice() {
            [range] => {
                let mut e = element;
                e.advance(block_range.start + range.start);
                e.truncate(range.len());
                (Some(e.freeze()), Bytes::new())
            }
            _ => (None, element.freeze().slice(block_range)),
        };

        let scale = self.timestamp_scale;
        let pts = timestamp_ns(cluster_ts, header.timecode, scale);
        let track = &self.tracks[index];
        let default_duration = track.track.default_duration_ns;
        let keyframe = match track.track.kind() {
            TrackKind::Audio => true,
            TrackKind::Video if h.id == id::SIMPLE_BLOCK => {
                header.flags & block::FLAG_KEYFRAME != 0
            }
            TrackKind::Video => !referenced,
        };
        let laced = self.laces.len() > 1;
        for (k, range) in self.laces.iter().enumerate() {
            let (pts, duration) = if laced {
                let offset = default_duration.map_or(0, |d| d.saturating_mul(k as u64));
                (
                    pts.saturating_add(i64::try_from(offset).unwrap_or(i64::MAX)),
                    default_duration,
                )
            } else {
                let scaled = block_duration.map(|d| d.saturating_mul(scale));
                (pts, scaled.or(default_duration))
            };
            let payload = match single.take() {
                Some(frame) => frame,
                None => block_body.slice(range.clone()),
            };
            let data = match &track.frame_prefix {
                None => payload,
                Some(prefix) => {
                    let mut b = BytesMut::with_capacity(prefix.len() + payload.len());
                    b.extend_from_slice(prefix);
                    b.extend_from_slice(&payload);
                    b.freeze()
                }
            };
            self.pending.push_back(DemuxEvent::Frame(Frame {
                track: index,
                pts,
                duration,
                keyframe,
                data,
            }));
        }
        Ok(Step::Continue)
    }
}

/// What a BlockGroup says about its Block.
struct BlockGroup {
    /// The Block's body, relative to the group's body.
    block: Range<usize>,
    duration: Option<u64>,
    referenced: bool,
}

/// Reads a BlockGroup's children; `Ok(None)` when it has no Block.
fn read_block_group(body: &[u8]) -> Result<Option<BlockGroup>, String> {
    let mut block = None;
    let mut duration = None;
    let mut referenced = false;
    for child in ebml::children(body) {
        let (cid, data) = child?;
        match cid {
            id::BLOCK => {
                // `data` is a subslice of `body`: its offset is the pointer difference.
                let start = data.as_ptr() as usize - body.as_ptr() as usize;
                block = Some(start..start + data.len());
            }
            id::BLOCK_DURATION => duration = Some(ebml::uint(cid, data)?),
            id::REFERENCE_BLOCK => referenced = true,
            _ => {}
        }
    }
    Ok(block.map(|block| BlockGroup {
        block,
        duration,
        referenced,
    }))
}

/// (Cluster Timestamp + relative) × TimestampScale in nanoseconds, saturated to `i64`.
fn timestamp_ns(cluster: u64, relative: i16, scale: u64) -> i64 {
    let ticks = i128::from(cluster) + i128::from(relative);
    let ns = ticks
        .checked_mul(i128::from(scale))
        .unwrap_or(if ticks < 0 { i128::MIN } else { i128::MAX });
    i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
}

/// The first `n` bytes as hex, for messages about bytes that are not what they should be.
fn hex_prefix(b: &[u8], n: usize) -> String {
    b.iter()
        .take(n)
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}
