//! From the stream's nanosecond presentation times to the decode times, presentation times
//! and durations of MP4 samples, in integer ticks of the track timescale.
//!
//! Matroska and RTP carry presentation times only. MP4 needs decode times too: strictly
//! increasing (they are the sum of the durations), never negative (`tfdt` is unsigned), and
//! never after the presentation time of the same sample. [`DtsReorder`] derives them for
//! video with B-frames; [`AudioTimer`] gives audio exact frame durations. Both work on ticks,
//! not nanoseconds: converting first and reconstructing after is what keeps DTS ≤ PTS true
//! after rounding (the "DTS not monotonic 11.417 → 11.416666667" class of bug cannot
//! happen when no time is rounded after it was compared).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use bytes::Bytes;

use super::Sample;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// `ns` nanoseconds in ticks of `timescale`, rounded to the nearest tick (halves up).
///
/// Integer arithmetic (128-bit), monotonic (a later time never gives fewer ticks), and the
/// inverse of [`ticks_to_ns`]: a tick count that went to nanoseconds comes back unchanged
/// (an RTP 90 kHz timestamp survives its trip through `Frame`). Saturates at the `i64`
/// range.
pub fn ns_to_ticks(ns: i64, timescale: u32) -> i64 {
    let scaled = i128::from(ns) * i128::from(timescale);
    let ticks = (scaled + NANOS_PER_SECOND / 2).div_euclid(NANOS_PER_SECOND);
    clamp_i64(ticks)
}

/// `ticks` of `timescale` in nanoseconds, rounded to the nearest nanosecond (halves up).
/// A timescale of 0 gives 0.
pub fn ticks_to_ns(ticks: i64, timescale: u32) -> i64 {
    if timescale == 0 {
        return 0;
    }
    let ts = i128::from(timescale);
    let scaled = i128::from(ticks) * NANOS_PER_SECOND;
    clamp_i64((2 * scaled + ts).div_euclid(2 * ts))
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// One track's view of the stream timeline: ticks = round((ns − origin) × timescale / 1e9).
///
/// Every track of a stream should share one `origin_ns`, so the tracks stay in sync. Choose
/// it a little before the first frame (e.g. first pts − 1 s; a whole second is exact in
/// every timescale): the room lets [`DtsReorder`] put the first decode times before the
/// first presentation time without going negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeMap {
    pub timescale: u32,
    pub origin_ns: i64,
}

impl TimeMap {
    pub fn new(timescale: u32, origin_ns: i64) -> Self {
        TimeMap {
            timescale,
            origin_ns,
        }
    }

    /// A stream time in this track's ticks.
    pub fn ticks(&self, ns: i64) -> i64 {
        ns_to_ticks(ns.saturating_sub(self.origin_ns), self.timescale)
    }

    /// This track's ticks as a stream time.
    pub fn ns(&self, ticks: i64) -> i64 {
        ticks_to_ns(ticks, self.timescale).saturating_add(self.origin_ns)
    }
}

/// H.264 and H.265 allow at most 16 frames of reordering (max_num_reorder_frames ≤
/// MaxDpbFrames ≤ 16).
pub const MAX_REORDER_DEPTH: usize = 16;

/// The most frames [`ReorderDepth::Adaptive`] holds back while it measures.
pub const MAX_PROBE: usize = 256;

/// How [`DtsReorder`] learns the stream's reorder depth: the most frames that precede any
/// frame in decode order and follow it in presentation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReorderDepth {
    /// Known, e.g. from the SPS (H.264 VUI `max_num_reorder_frames`, H.265
    /// `sps_max_num_reorder_pics`); 0 for streams without B-frames (VP8, VP9, AV1 as
    /// Matroska stores them, intra-only, baseline H.264).
    Fixed(usize),
    /// Unknown: measured over the first `probe` frames (held before any is emitted; at most
    /// [`MAX_PROBE`]), starting from `initial`, and raised later if a frame shows deeper
    /// reordering. A raise after the probe costs one frame whose pts has to be moved (see
    /// [`DtsReorder`]). A probe of a GOP or two (8–30 frames) finds the depth of every
    /// common encoder setting.
    Adaptive { initial: usize, probe: usize },
}

/// What [`DtsReorder`] had to do to keep its promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// The reorder depth in use now.
    pub depth: usize,
    /// Frames whose pts was below the reconstructed decode time and was raised to it (a
    /// stream reordering deeper than declared, duplicate pts, a timeline jumping backwards).
    pub pts_raised: u64,
    /// Frames that showed deeper reordering than the depth in use.
    pub violations: u64,
}

/// A frame waiting for its decode time (only while the first frames are collected).
#[derive(Debug)]
struct Waiting {
    pts: i64,
    sync: bool,
    data: Bytes,
}

/// A frame with its decode time, waiting for the next one to know its duration.
#[derive(Debug)]
struct Held {
    dts: i64,
    pts: i64,
    sync: bool,
    data: Bytes,
}

/// Reconstructs decode times for a stream that carries presentation times only, one frame
/// at a time, in decode order (the order frames are stored and sent).
///
/// # Method
///
/// With reorder depth `d`, the decode time of the `i`-th frame is the `(i−d)`-th smallest
/// presentation time seen so far: `DTS[i] = sorted_pts[i − d]`. When no frame is reordered
/// deeper than `d`, that order statistic is already final when frame `i` arrives (no later
/// frame can be smaller), `DTS[i] ≤ PTS[i]` holds exactly, DTS increases with the PTS
/// cadence, and composition offsets are never negative. A min-heap of the `d + 1` largest
/// pending presentation times gives it in O(log d). The first `d` frames have no such order
/// statistic: their decode times are extrapolated backwards from the smallest pts, one
/// smallest-observed pts gap apart, so decode starts `d` frames before presentation.
///
/// Whatever the input (duplicate pts, deeper reordering than declared, time going
/// backwards), the output keeps its invariants: dts ≥ 0, strictly increasing, dts ≤ pts,
/// duration = next dts − dts. When a frame's pts is below the only decode time still
/// possible (the previous one + 1), its pts is raised to that decode time and counted in
/// [`ReorderStats::pts_raised`]. A frame whose pts is below 0 ticks is treated the same way,
/// which is why [`TimeMap::origin_ns`] should leave room before the first frame.
///
/// # Latency
///
/// A sample comes out when the next frame has arrived (its duration is the difference of
/// the two decode times): one frame. At the start, the first `d + 1` frames are collected
/// before the first comes out (`probe` frames in adaptive mode), so the added delay is at
/// most `max(d, 1)` frame intervals.
#[derive(Debug)]
pub struct DtsReorder {
    depth: usize,
    adaptive: bool,
    probe: usize,
    /// Presentation times not yet used as a decode time.
    heap: BinaryHeap<Reverse<i64>>,
    /// The last presentation times used as decode times, oldest first (for adaptive depth).
    used: VecDeque<i64>,
    started: bool,
    waiting: Vec<Waiting>,
    held: Option<Held>,
    last_dts: Option<i64>,
    last_duration: Option<u32>,
    frame_duration: Option<i64>,
    ready: VecDeque<Sample>,
    stats: ReorderStats,
}

impl DtsReorder {
    pub fn new(depth: ReorderDepth) -> Self {
        let (depth, adaptive, probe) = match depth {
            ReorderDepth::Fixed(d) => (d.min(MAX_REORDER_DEPTH), false, 0),
            ReorderDepth::Adaptive { initial, probe } => {
                (initial.min(MAX_REORDER_DEPTH), true, probe.min(MAX_PROBE))
            }
        };
        DtsReorder {
            depth,
            adaptive,
            probe,
            heap: BinaryHeap::with_capacity(depth + 2),
            used: VecDeque::with_capacity(MAX_REORDER_DEPTH),
            started: false,
            waiting: Vec::new(),
            held: None,
            last_dts: None,
            last_duration: None,
            frame_duration: None,
            ready: VecDeque::new(),
            stats: ReorderStats {
                depth,
                ..Default::default()
            },
        }
    }

    /// The nominal frame interval in ticks (Matroska DefaultDuration, the SPS timing info),
    /// used for one thing only: spacing the decode times of the first `depth` frames, which
    /// precede every presentation time and so cannot be derived from them. Without it they
    /// are spaced by the smallest pts gap among the first frames, which with B-frames is
    /// often two or four frame intervals (the B-frames between have not arrived yet): valid,
    /// but the first samples then last longer than the others.
    pub fn with_frame_duration(mut self, ticks: Option<u32>) -> Self {
        self.frame_duration = ticks.filter(|&t| t > 0).map(i64::from);
        self
    }

    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Frames pushed that have not come out yet.
    pub fn pending(&self) -> usize {
        self.waiting.len() + usize::from(self.held.is_some()) + self.ready.len()
    }

    /// Adds the next frame in decode order: its presentation time in track ticks
    /// ([`TimeMap::ticks`]), whether it is a sync sample, and its payload.
    pub fn push(&mut self, pts: i64, sync: bool, data: Bytes) {
        if !self.started {
            // How many earlier frames present after this one: the depth this frame needs.
            let needed = self.waiting.iter().filter(|w| w.pts > pts).count();
            if needed > self.depth {
                self.stats.violations += 1;
                if self.adaptive {
                    self.set_depth(needed);
                }
            }
            self.waiting.push(Waiting { pts, sync, data });
            if self.waiting.len() > self.depth && self.waiting.len() >= self.probe {
                self.start();
            }
            return;
        }

        if self.used.back().is_some_and(|&last| pts < last) {
            self.stats.violations += 1;
            if self.adaptive {
                self.deepen(pts);
            }
        }
        self.heap.push(Reverse(pts));
        let candidate = if self.heap.len() > self.depth {
            self.pop_used()
        } else {
            None
        };
        self.assign(pts, sync, data, candidate);
    }

    /// The next sample whose decode time and duration are known.
    pub fn pop(&mut self) -> Option<Sample> {
        self.ready.pop_front()
    }

    /// The input has ended (or a discontinuity follows): everything pushed comes out through
    /// [`Self::pop`]. The last sample's duration is `last_duration` if given, else the
    /// previous sample's, else 1 tick. Afterwards the reconstructor starts afresh (same
    /// depth setting, statistics kept): the next frame starts a new timeline.
    pub fn flush(&mut self, last_duration: Option<u32>) {
        if !self.started && !self.waiting.is_empty() {
            self.start();
        }
        if let Some(h) = self.held.take() {
            let duration = last_duration.or(self.last_duration).unwrap_or(1).max(1);
            self.emit(h, duration);
        }
        self.heap.clear();
        self.used.clear();
        self.started = false;
        self.last_dts = None;
        self.last_duration = None;
    }

    fn set_depth(&mut self, depth: usize) {
        self.depth = depth.min(MAX_REORDER_DEPTH);
        self.stats.depth = self.depth;
    }

    /// A frame presents before a decode time already used: the stream reorders deeper than
    /// `depth`. The used times above `pts` go back into the heap, so that from now on the
    /// heap holds the new depth's worth of pending times.
    fn deepen(&mut self, pts: i64) {
        let above = self.used.iter().filter(|&&u| u > pts).count();
        // Every remembered time above it and the memory full: not reordering but a jump
        // back in time. Deepening would not help; the frame's pts gets raised.
        if above == self.used.len() && self.used.len() == MAX_REORDER_DEPTH {
            return;
        }
        let extra = above.min(MAX_REORDER_DEPTH - self.depth);
        // Un-use the `extra` largest of them (usually the most recent ones).
        for _ in 0..extra {
            let largest = (0..self.used.len()).max_by_key(|&i| self.used[i]);
            if let Some(u) = largest.and_then(|i| self.used.remove(i)) {
                self.heap.push(Reverse(u));
            }
        }
        self.set_depth(self.depth + extra);
    }

    fn pop_used(&mut self) -> Option<i64> {
        let Reverse(v) = self.heap.pop()?;
        if self.used.len() == MAX_REORDER_DEPTH {
            self.used.pop_front();
        }
        self.used.push_back(v);
        Some(v)
    }

    /// Gives the collected first frames their decode times: extrapolated backwards from the
    /// smallest pts for the first `depth`, order statistics for the rest.
    fn start(&mut self) {
        self.started = true;
        let waiting = std::mem::take(&mut self.waiting);
        let n = waiting.len();
        let mut sorted: Vec<i64> = waiting.iter().map(|w| w.pts).collect();
        sorted.sort_unstable();
        let step = self.frame_duration.unwrap_or_else(|| {
            sorted
                .windows(2)
                .map(|w| w[1].saturating_sub(w[0]))
                .filter(|&g| g > 0)
                .min()
                .unwrap_or(1)
        });
        let d = self.depth.min(n);
        let smallest = sorted[0];
        // The d largest stay pending; the others are used, smallest first.
        for &v in &sorted[n - d..] {
            self.heap.push(Reverse(v));
        }
        for &v in &sorted[..n - d] {
            if self.used.len() == MAX_REORDER_DEPTH {
                self.used.pop_front();
            }
            self.used.push_back(v);
        }
        for (j, w) in waiting.into_iter().enumerate() {
            let candidate = if j < self.depth {
                let back = i64::try_from(self.depth - j).unwrap_or(i64::MAX);
                smallest.saturating_sub(step.saturating_mul(back))
            } else {
                sorted[j - self.depth]
            };
            self.assign(w.pts, w.sync, w.data, Some(candidate));
        }
    }

    /// Fixes one frame's decode time: the candidate, kept above the previous decode time and
    /// at most the pts; when that range is empty, the pts is raised.
    fn assign(&mut self, pts: i64, sync: bool, data: Bytes, candidate: Option<i64>) {
        let lowest = self.last_dts.map_or(0, |d| d.saturating_add(1));
        let (dts, pts) = if lowest <= pts {
            (candidate.unwrap_or(lowest).clamp(lowest, pts), pts)
        } else {
            self.stats.pts_raised += 1;
            (lowest, lowest)
        };
        if let Some(prev) = self.held.take() {
            let duration = u32::try_from(dts - prev.dts).unwrap_or(u32::MAX);
            self.last_duration = Some(duration);
            self.emit(prev, duration);
        }
        self.last_dts = Some(dts);
        self.held = Some(Held {
            dts,
            pts,
            sync,
            data,
        });
    }

    fn emit(&mut self, h: Held, duration: u32) {
        // assign() keeps 0 ≤ dts ≤ pts.
        self.ready.push_back(Sample {
            dts: h.dts as u64,
            pts: h.pts as u64,
            duration,
            sync: h.sync,
            data: h.data,
        });
    }
}

/// What [`AudioTimer`] had to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioStats {
    /// Frames whose pts was further than half a frame from where the previous frame ended
    /// (a gap, an overlap, clock drift): the timeline followed the pts there.
    pub resyncs: u64,
    /// Frames whose pts was not after the previous frame's, or below 0: moved just after.
    pub pts_raised: u64,
}

/// Audio timing: dts = pts, duration = the next frame's time − this one's.
///
/// When the frame length is known (AAC 1024 samples, Opus from its TOC byte via
/// [`opus_packet_samples`]), each frame is placed exactly where the previous one ended as
/// long as its pts is within half a frame of there. Container timestamps are rounded
/// (Matroska's are usually milliseconds: 21, 43, 64 ms for 1024-sample AAC frames at 48 kHz,
/// which would make durations of 1008 and 1056 samples); following the frame lengths gives
/// exact durations, and the error against the source's own times stays below half a frame.
/// Further away (a real gap or overlap), the timeline follows the pts.
///
/// Latency: one frame (a duration needs the next frame).
#[derive(Debug, Default)]
pub struct AudioTimer {
    held: Option<Held>,
    /// Where the held frame ends, if its length is known, and half that length.
    next: Option<(i64, i64)>,
    last_duration: Option<u32>,
    ready: VecDeque<Sample>,
    stats: AudioStats,
}

impl AudioTimer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> AudioStats {
        self.stats
    }

    /// Adds the next frame: pts in track ticks, its length in ticks if known, its payload.
    pub fn push(&mut self, pts: i64, frame_len: Option<u32>, data: Bytes) {
        let mut t = match self.next {
            Some((end, half)) if pts.abs_diff(end) <= half.unsigned_abs() => end,
            Some(_) => {
                self.stats.resyncs += 1;
                pts
            }
            None => pts,
        };
        let lowest = self.held.as_ref().map_or(0, |h| h.dts.saturating_add(1));
        if t < lowest {
            self.stats.pts_raised += 1;
            t = lowest;
        }
        if let Some(prev) = self.held.take() {
            let duration = u32::try_from(t - prev.dts).unwrap_or(u32::MAX);
            self.last_duration = Some(duration);
            self.emit(prev, duration);
        }
        self.next = frame_len
            .filter(|&l| l > 0)
            .map(|l| (t.saturating_add(i64::from(l)), i64::from(l / 2)));
        self.held = Some(Held {
            dts: t,
            pts: t,
            sync: true,
            data,
        });
    }

    /// The next sample whose duration is known.
    pub fn pop(&mut self) -> Option<Sample> {
        self.ready.pop_front()
    }

    /// The input has ended: the last frame comes out with its own length if it was given,
    /// else `last_duration`, else the previous frame's duration, else 1 tick. The next frame
    /// starts a new timeline.
    pub fn flush(&mut self, last_duration: Option<u32>) {
        if let Some(h) = self.held.take() {
            let own = self
                .next
                .and_then(|(end, _)| u32::try_from(end - h.dts).ok());
            let duration = own
                .or(last_duration)
                .or(self.last_duration)
                .unwrap_or(1)
                .max(1);
            self.emit(h, duration);
        }
        self.next = None;
        self.last_duration = None;
    }

    fn emit(&mut self, h: Held, duration: u32) {
        // push() keeps dts ≥ 0.
        self.ready.push_back(Sample {
            dts: h.dts as u64,
            pts: h.pts as u64,
            duration,
            sync: true,
            data: h.data,
        });
    }
}

/// The number of 48 kHz samples in an Opus packet, from its TOC byte (RFC 6716 §3.1), or
/// `None` for an empty or malformed packet.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        // SILK-only: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT-only: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3F),
    };
    let total = frame * frames;
    // A packet holds at most 120 ms.
    (frames > 0 && total <= 5760).then_some(total)
}
