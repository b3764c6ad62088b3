//! The event loop's side of HLS/DASH: per rendition (one CMAF track), a window of
//! segments, each the list of its parts' chunks (stored once; a segment is served as the
//! concatenation of its parts, never copied).

use std::collections::{BTreeMap, VecDeque};

use std::sync::Arc;

use bytes::Bytes;

use super::segment_file::SegmentFile;

use super::hls::{PartInfo, SegmentInfo};

/// What a rendition is, for playlists and manifests.
#[derive(Clone, Debug, PartialEq)]
pub struct RenditionInfo {
    /// Path component: `v0`, `a1`, ...
    pub id: String,
    pub video: bool,
    pub codec_string: String,
    pub timescale: u32,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
    pub sample_rate: u32,
    pub channels: u32,
}

/// One part: a CMAF chunk as buffers to write in order.
#[derive(Clone, Debug)]
pub struct PartData {
    pub buffers: Vec<Bytes>,
    pub len: u64,
    pub duration_s: f64,
    pub independent: bool,
    /// Decode time of the first sample and the part's duration, in the track timescale
    /// (DASH addresses segments by `$Time$`).
    pub start_ticks: u64,
    pub duration_ticks: u64,
    /// Earliest presentation time of the part's samples (≥ `start_ticks`).
    pub presentation_ticks: u64,
}

#[derive(Clone, Debug)]
pub struct SegmentData {
    pub msn: u64,
    pub parts: Vec<PartData>,
    pub complete: bool,
    pub program_date_time_ms: i64,
    pub discontinuity: bool,
    pub init: u64,
    /// The whole segment in one buffer, once complete (see [`join_parts`]).
    pub joined: Option<Bytes>,
    /// The memory file behind `joined`, when there is one (for `sendfile`).
    pub file: Option<Arc<SegmentFile>>,
}

impl SegmentData {
    pub fn start_ticks(&self) -> u64 {
        self.parts.first().map_or(0, |p| p.start_ticks)
    }

    /// The segment's earliest presentation time: its `S@t` and `$Time$` in DASH (the
    /// MPD timeline is in presentation time; with B-frames the first decode time is
    /// earlier).
    pub fn presentation_ticks(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| p.presentation_ticks)
            .min()
            .unwrap_or(0)
    }

    pub fn duration_ticks(&self) -> u64 {
        self.parts.iter().map(|p| p.duration_ticks).sum()
    }

    pub fn duration_s(&self) -> f64 {
        self.parts.iter().map(|p| p.duration_s).sum()
    }

    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Every buffer of every part, in order: the whole segment (one buffer once the
    /// segment is complete).
    pub fn buffers(&self) -> Vec<Bytes> {
        if let Some(joined) = &self.joined {
            return vec![joined.clone()];
        }
        self.parts
            .iter()
            .flat_map(|p| p.buffers.iter().cloned())
            .collect()
    }
}

/// Copies a finished segment's parts (moof, mdat header and frame buffers, ~80 for a
/// 2 s segment) into one sealed memory file, each part then a slice of its mapping: a
/// segment goes out by `sendfile`, a part as one iovec instead of dozens (bench/README.md).
/// Still stored once: the part buffers are dropped (the frames stay only while the
/// live-MKV window holds them). Without a memory file, one heap buffer does the same
/// minus `sendfile`.
fn join_parts(parts: &mut [PartData]) -> (Option<Bytes>, Option<Arc<SegmentFile>>) {
    let mut buffers: Vec<&Bytes> = Vec::with_capacity(parts.iter().map(|p| p.buffers.len()).sum());
    buffers.extend(parts.iter().flat_map(|p| &p.buffers));
    let file = SegmentFile::seal(&buffers);
    let joined = match &file {
        Some(f) => f.bytes(),
        None => {
            let total: usize = buffers.iter().map(|b| b.len()).sum();
            let mut joined = bytes::BytesMut::with_capacity(total);
            for b in buffers {
                joined.extend_from_slice(b);
            }
            joined.freeze()
        }
    };
    let mut at = 0;
    for part in parts.iter_mut() {
        let len: usize = part.buffers.iter().map(Bytes::len).sum();
        part.buffers = if len == 0 {
            Vec::new()
        } else {
            vec![joined.slice(at..at + len)]
        };
        at += len;
    }
    ((!joined.is_empty()).then_some(joined), file)
}

/// What a DASH `$Time$` names (see [`Rendition::resolve_time`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeMatch {
    /// This segment (by msn): complete, or being written.
    Segment(u64),
    /// A segment that has not started yet (the MPD lists one ahead): wait for it.
    Later,
    /// Left the window, never existed, or too far ahead.
    Never,
}

/// A rendition's window of segments.
#[derive(Debug)]
pub struct Rendition {
    pub info: RenditionInfo,
    pub inits: BTreeMap<u64, Bytes>,
    /// What the rendition was under each earlier init still in the window.
    past_infos: BTreeMap<u64, RenditionInfo>,
    /// Id of the current init segment (`init{id}.mp4`), and of the first one.
    pub current_init: u64,
    pub first_init: u64,
    /// Presentation time of the first segment of each init after the first: where its
    /// DASH Period starts (fixed once known, as a Period's start must be).
    pub init_starts: BTreeMap<u64, u64>,
    /// The first segment ever: its presentation time (ticks) and the wall clock then
    /// (Unix ms). DASH's availabilityStartTime and Period starts are fixed by it.
    pub origin: Option<(u64, i64)>,
    segments: VecDeque<SegmentData>,
    window: usize,
    /// Discontinuities that left the window (EXT-X-DISCONTINUITY-SEQUENCE).
    pub discontinuity_sequence: u64,
    pending_discontinuity: bool,
    pub ended: bool,
    /// The rendered media playlist (full, and delta update): it changes only when a
    /// CMAF update arrives for the stream, which clears it, while clients ask many times
    /// in between (rendering was ~40 % of the loop's time under `wrk`).
    playlist_cache: std::cell::RefCell<[Option<CachedPlaylist>; 2]>,
    /// Bytes of complete segments seen, and their seconds, for BANDWIDTH.
    peak_bps: f64,
}

/// A rendered media playlist, in a sealed memory file when the system allows one.
///
/// Served by `sendfile` from the file, every answer's body comes from the same few pages
/// until the playlist changes (a few times a second), instead of a fresh kernel copy per
/// answer: under `wrk` with 1000 connections the client's copy out of freshly written
/// socket buffers was 11 % of its time against 6 % for nginx's `sendfile` of a file
/// (bench/README.md), and the one-thread client is what limits that benchmark.
#[derive(Clone, Debug)]
pub struct CachedPlaylist {
    pub bytes: Bytes,
    pub file: Option<Arc<SegmentFile>>,
}

impl CachedPlaylist {
    fn new(text: Bytes) -> Self {
        match SegmentFile::seal(&[&text]) {
            Some(file) => CachedPlaylist {
                bytes: file.bytes(),
                file: Some(file),
            },
            None => CachedPlaylist {
                bytes: text,
                file: None,
            },
        }
    }
}

impl Rendition {
    /// `init_id` names the init segment: unique across runs (see `RunBases`).
    pub fn new(info: RenditionInfo, init: Bytes, init_id: u64, window: usize) -> Self {
        let mut inits = BTreeMap::new();
        inits.insert(init_id, init);
        Rendition {
            info,
            inits,
            past_infos: BTreeMap::new(),
            current_init: init_id,
            first_init: init_id,
            init_starts: BTreeMap::new(),
            origin: None,
            segments: VecDeque::new(),
            window: window.max(2),
            discontinuity_sequence: 0,
            pending_discontinuity: false,
            ended: false,
            playlist_cache: Default::default(),
            peak_bps: 0.0,
        }
    }

    /// A new init segment (new parameter sets, new tracks) and what the rendition is
    /// now: the next segment follows a discontinuity.
    pub fn new_init(&mut self, info: RenditionInfo, init: Bytes, init_id: u64) {
        let old = std::mem::replace(&mut self.info, info);
        self.past_infos.insert(self.current_init, old);
        // Ids only grow (they are msns): keep them distinct even if one was reused.
        self.current_init = init_id.max(self.current_init + 1);
        self.inits.insert(self.current_init, init);
        self.pending_discontinuity = true;
        self.close_segment();
    }

    /// Marks the last segment complete: when its last part arrives (so its EXTINF and
    /// the next preload hint are right at once), when a new one starts, or at the end.
    pub fn close_segment(&mut self) {
        if let Some(last) = self.segments.back_mut()
            && !last.complete
        {
            last.complete = true;
            (last.joined, last.file) = join_parts(&mut last.parts);
            let d = last.duration_s();
            if d > 0.0 {
                self.peak_bps = self.peak_bps.max(last.len() as f64 * 8.0 / d);
            }
        }
    }

    /// Appends a part. `starts_segment` closes the previous segment.
    pub fn push_part(&mut self, msn: u64, part: PartData, starts_segment: bool, pdt_ms: i64) {
        let need_new = starts_segment
            || self
                .segments
                .back()
                .is_none_or(|s| s.complete || s.msn != msn);
        if need_new {
            self.close_segment();
            // As many parts as the last segment had: they are not grown one at a time.
            let parts = self.segments.back().map_or(0, |s| s.parts.len());
            self.segments.push_back(SegmentData {
                msn,
                parts: Vec::with_capacity(parts),
                complete: false,
                program_date_time_ms: pdt_ms,
                discontinuity: std::mem::take(&mut self.pending_discontinuity),
                init: self.current_init,
                joined: None,
                file: None,
            });
            while self.segments.len() > self.window {
                if let Some(old) = self.segments.pop_front()
                    && old.discontinuity
                {
                    self.discontinuity_sequence += 1;
                }
                // Inits no segment in the window needs any more.
                let oldest_init = self.segments.front().map_or(self.current_init, |s| s.init);
                self.inits.retain(|&k, _| k >= oldest_init);
                self.init_starts.retain(|&k, _| k >= oldest_init);
                self.past_infos.retain(|&k, _| k >= oldest_init);
            }
            self.init_starts
                .entry(self.current_init)
                .or_insert(part.presentation_ticks);
            if self.origin.is_none() {
                // The program date time is the wall clock of the first presentation.
                self.origin = Some((part.presentation_ticks, pdt_ms));
            }
        }
        if let Some(last) = self.segments.back_mut() {
            last.parts.push(part);
        }
    }

    /// The media playlist rendered earlier for `skip`, or `render`'s, kept until
    /// [`Rendition::clear_playlist_cache`].
    pub fn cached_playlist(&self, skip: bool, render: impl FnOnce() -> String) -> CachedPlaylist {
        let slot = usize::from(skip);
        if let Some(cached) = &self.playlist_cache.borrow()[slot] {
            return cached.clone();
        }
        let cached = CachedPlaylist::new(Bytes::from(render()));
        self.playlist_cache.borrow_mut()[slot] = Some(cached.clone());
        cached
    }

    /// Forgets the rendered playlists: something the playlist shows may have changed
    /// (this rendition or another one's rendition report).
    pub fn clear_playlist_cache(&self) {
        *self.playlist_cache.borrow_mut() = [None, None];
    }

    /// What the rendition was (codec, size) under init `init`.
    pub fn info_of(&self, init: u64) -> &RenditionInfo {
        self.past_infos.get(&init).unwrap_or(&self.info)
    }

    pub fn end(&mut self) {
        self.close_segment();
        self.ended = true;
    }

    pub fn segments(&self) -> impl Iterator<Item = &SegmentData> {
        self.segments.iter()
    }

    pub fn segment(&self, msn: u64) -> Option<&SegmentData> {
        let first = self.segments.front()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
            .filter(|s| s.msn == msn)
    }

    /// The segment whose presentation starts at `ticks` (DASH `$Time$`). A player
    /// computes the time of the segment in progress as the last one's `t + d`; when the
    /// encoder's reorder delay changed in between, that is off by a frame or two, so a
    /// time within half the segment's first part still names it (segments are whole
    /// GOPs, far longer than that).
    pub fn segment_at(&self, ticks: u64) -> Option<&SegmentData> {
        self.segments.iter().find(|s| {
            let tolerance = s.parts.first().map_or(0, |p| p.duration_ticks / 2);
            s.presentation_ticks().abs_diff(ticks) <= tolerance
        })
    }

    /// Which segment a DASH `$Time$` request means. The MPD lists the segment being
    /// written and the one after it with estimated times (the previous segment's
    /// duration); a segment's real start differs from its estimate when the GOP or the
    /// reorder delay changed. A time that names no segment start exactly is the segment
    /// whose start is nearest, once that can be told: a time past the segment being
    /// written waits until a later segment starts, or until the one being written has
    /// grown so long that no later start could be nearer.
    pub fn resolve_time(&self, ticks: u64) -> TimeMatch {
        let (Some(first), Some(last)) = (self.segments.front(), self.segments.back()) else {
            return TimeMatch::Never;
        };
        if let Some(s) = self.segment_at(ticks) {
            return TimeMatch::Segment(s.msn);
        }
        if ticks < first.presentation_ticks() {
            return TimeMatch::Never;
        }
        let last_start = last.presentation_ticks();
        if ticks <= last_start {
            return self
                .segments
                .iter()
                .min_by_key(|s| s.presentation_ticks().abs_diff(ticks))
                .map_or(TimeMatch::Never, |s| TimeMatch::Segment(s.msn));
        }
        // Past the start of the last segment: the next one starts at its end (known once
        // it is complete, no earlier than its end so far while it is written).
        let end = last_start + last.duration_ticks();
        let longest = self
            .segments
            .iter()
            .map(SegmentData::duration_ticks)
            .max()
            .unwrap_or(0)
            .max(1);
        if ticks - last_start <= end.saturating_sub(ticks) {
            TimeMatch::Segment(last.msn)
        } else if self.ended || ticks > end + 3 * longest {
            TimeMatch::Never
        } else {
            TimeMatch::Later
        }
    }

    pub fn part(&self, msn: u64, part: usize) -> Option<&PartData> {
        self.segment(msn)?.parts.get(part)
    }

    /// The last segment's msn and its number of parts.
    pub fn last_position(&self) -> Option<(u64, usize)> {
        self.segments.back().map(|s| (s.msn, s.parts.len()))
    }

    /// Whether part `part` of segment `msn` exists (for blocking reload: a part index past
    /// a complete segment's end means the first part of the next one).
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        let Some(last) = self.segments.back() else {
            return false;
        };
        match part {
            None => self.segment(msn).is_some_and(|s| s.complete) || msn < last.msn,
            Some(p) => {
                if msn < last.msn {
                    return true;
                }
                msn == last.msn
                    && (p < last.parts.len() || (last.complete && p >= last.parts.len()))
            }
        }
    }

    /// BANDWIDTH: the peak bit rate of complete segments so far.
    pub fn bandwidth_bps(&self) -> u64 {
        self.peak_bps.round() as u64
    }

    /// The playlist's view of the window.
    pub fn playlist_segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|s| SegmentInfo {
                msn: s.msn,
                parts: s
                    .parts
                    .iter()
                    .map(|p| PartInfo {
                        duration_s: p.duration_s,
                        independent: p.independent,
                    })
                    .collect(),
                complete: s.complete,
                duration_s: s.duration_s(),
                program_date_time_ms: s.program_date_time_ms,
                discontinuity: s.discontinuity,
                init: s.init,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RenditionInfo {
        RenditionInfo {
            id: "v0".into(),
            video: true,
            codec_string: "avc1.64001f".into(),
            timescale: 90_000,
            width: 320,
            height: 240,
            frame_rate: Some(25.0),
            sample_rate: 0,
            channels: 0,
        }
    }

    fn part(len: usize) -> PartData {
        PartData {
            // Two buffers (as a moof and its mdat): distinct bytes, so joining shows.
            buffers: vec![
                Bytes::from(vec![len as u8; len / 2]),
                Bytes::from(vec![len as u8 + 1; len - len / 2]),
            ],
            len: len as u64,
            duration_s: 0.2,
            independent: false,
            start_ticks: 0,
            duration_ticks: 18_000,
            presentation_ticks: 0,
        }
    }

    #[test]
    fn segments_are_their_parts_and_the_window_is_bounded() {
        let mut r = Rendition::new(info(), Bytes::from_static(b"init"), 0, 3);
        for msn in 0..5u64 {
            for p in 0..10 {
                r.push_part(msn, part(100), p == 0, msn as i64 * 2000);
            }
        }
        let segs: Vec<u64> = r.segments().map(|s| s.msn).collect();
        assert_eq!(segs, vec![2, 3, 4]);
        assert!(r.segment(3).unwrap().complete);
        assert!(!r.segment(4).unwrap().complete);
        assert_eq!(r.segment(3).unwrap().len(), 1000);
        // A complete segment is one buffer, its parts slices of it with the same bytes.
        let seg = r.segment(3).unwrap();
        assert_eq!(seg.buffers().len(), 1);
        let expected: Vec<u8> = (0..10).flat_map(|_| part(100).buffers.concat()).collect();
        assert_eq!(seg.buffers()[0][..], expected[..]);
        for p in &seg.parts {
            assert_eq!(p.buffers.len(), 1);
            assert_eq!(p.buffers[0][..], part(100).buffers.concat()[..]);
        }
        // The one being written is still its parts' buffers.
        assert_eq!(r.segment(4).unwrap().buffers().len(), 20);
        assert!(r.segment(1).is_none());
        assert_eq!(r.bandwidth_bps(), 4000);
    }

    #[test]
    fn blocking_reload_positions() {
        let mut r = Rendition::new(info(), Bytes::from_static(b"init"), 0, 5);
        r.push_part(0, part(10), true, 0);
        r.push_part(0, part(10), false, 0);
        assert!(r.has(0, Some(1)));
        assert!(!r.has(0, Some(2)));
        assert!(!r.has(0, None), "segment 0 is not complete");
        r.push_part(1, part(10), true, 0);
        assert!(r.has(0, None));
        assert!(
            r.has(0, Some(7)),
            "a part past a complete segment's end is the next one's first"
        );
        assert!(r.has(1, Some(0)));
        assert!(!r.has(1, Some(1)));
        assert!(!r.has(2, Some(0)));
    }

    #[test]
    fn a_new_init_marks_a_discontinuity_that_is_counted_when_it_leaves() {
        let mut r = Rendition::new(info(), Bytes::from_static(b"i0"), 0, 2);
        r.push_part(0, part(10), true, 0);
        r.new_init(info(), Bytes::from_static(b"i1"), 1);
        r.push_part(1, part(10), true, 0);
        let segs = r.playlist_segments();
        assert!(segs[1].discontinuity);
        assert_eq!(segs[1].init, 1);
        r.push_part(2, part(10), true, 0);
        r.push_part(3, part(10), true, 0);
        assert_eq!(r.discontinuity_sequence, 1);
        assert!(!r.inits.contains_key(&0), "init 0 is no longer needed");
    }

    /// A part of `len` bytes presented from `at` for 18000 ticks.
    fn part_at(at: u64) -> PartData {
        PartData {
            presentation_ticks: at,
            start_ticks: at,
            ..part(10)
        }
    }

    /// Segment `msn` of `parts` parts from `at`.
    fn push_segment(r: &mut Rendition, msn: u64, at: u64, parts: u64) {
        for p in 0..parts {
            r.push_part(msn, part_at(at + p * 18_000), p == 0, 0);
        }
    }

    #[test]
    fn a_dash_time_names_the_segment_whose_start_is_nearest() {
        let mut r = Rendition::new(info(), Bytes::from_static(b"init"), 0, 5);
        assert_eq!(r.resolve_time(0), TimeMatch::Never);
        push_segment(&mut r, 10, 1_000_000, 10);
        // The second segment ran 2340 ticks longer than the first (a loop's gap).
        push_segment(&mut r, 11, 1_180_000, 10);
        r.push_part(11, part_at(1_180_000 + 180_000), false, 0);
        r.close_segment();
        push_segment(&mut r, 12, 1_378_000, 3);
        // Exact starts, and a start within half a part.
        assert_eq!(r.resolve_time(1_000_000), TimeMatch::Segment(10));
        assert_eq!(r.resolve_time(1_180_000 + 5_000), TimeMatch::Segment(11));
        // An estimate (1_180_000 + 180_000) that the real start (1_378_000) missed by
        // more than half a part: still the nearest start.
        assert_eq!(r.resolve_time(1_360_000), TimeMatch::Segment(12));
        // Before the window: gone.
        assert_eq!(r.resolve_time(900_000), TimeMatch::Never);
        // The segment after the one being written (its estimate): not yet.
        assert_eq!(r.resolve_time(1_378_000 + 198_000), TimeMatch::Later);
        // The one after that, also listed while the last is complete.
        r.close_segment();
        assert_eq!(r.resolve_time(1_378_000 + 2 * 180_000), TimeMatch::Later);
        // Far beyond anything listed: never.
        assert_eq!(r.resolve_time(1_378_000 + 20 * 180_000), TimeMatch::Never);
        // The next segment begins a little before the estimate: the estimate names it.
        push_segment(&mut r, 13, 1_432_000, 1);
        assert_eq!(r.resolve_time(1_432_000 + 5_000), TimeMatch::Segment(13));
        // A time well past the start of the segment being written is that segment once
        // it is clearly nearer than any later start could be.
        assert_eq!(r.resolve_time(1_432_000 + 30_000), TimeMatch::Later);
        for p in 1..4 {
            r.push_part(13, part_at(1_432_000 + p * 18_000), false, 0);
        }
        assert_eq!(r.resolve_time(1_432_000 + 30_000), TimeMatch::Segment(13));
        r.end();
        assert_eq!(r.resolve_time(1_432_000 + 180_000), TimeMatch::Never);
    }
    #[test]
    fn a_cached_playlist_is_rendered_once_and_lives_in_its_memory_file() {
        let r = Rendition::new(info(), Bytes::from_static(b"init"), 0, 3);
        let mut renders = 0;
        let mut render = || {
            renders += 1;
            format!("#EXTM3U\n#render {renders}\n")
        };
        let first = r.cached_playlist(false, &mut render);
        let again = r.cached_playlist(false, &mut render);
        assert_eq!(&first.bytes[..], b"#EXTM3U\n#render 1\n");
        assert_eq!(again.bytes, first.bytes);
        // The delta update has its own slot.
        let skip = r.cached_playlist(true, &mut render);
        assert_eq!(&skip.bytes[..], b"#EXTM3U\n#render 2\n");
        if cfg!(target_os = "linux") {
            // sendfile sends the file: it must hold exactly the bytes a HEAD or a
            // copying fallback would send.
            let file = first.file.as_ref().expect("a memfd on Linux");
            assert_eq!(file.as_ref().as_ref(), &first.bytes[..]);
            assert!(Arc::ptr_eq(file, again.file.as_ref().unwrap()));
        }
        r.clear_playlist_cache();
        let fresh = r.cached_playlist(false, &mut render);
        assert_eq!(&fresh.bytes[..], b"#EXTM3U\n#render 3\n");
        assert_eq!(renders, 3);
    }
}
