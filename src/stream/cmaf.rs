//! The CMAF segmenter: decides *when* parts and segments end; `mux::fmp4` decides *how*
//! they are written. One instance per stream, fed every track's samples in arrival order.
//!
//! One track leads: the first video track (else the first audio track). It cuts a part
//! when the part has reached the part duration, and a segment at a sync sample once the
//! segment has reached the segment duration (a segment is whole GOPs). Every cut is an
//! instant on the stream's timeline; the other tracks replay the leader's cuts at the
//! same instants, so segment N and part N.k mean the same span of time in every track
//! (to within one audio frame).

use std::collections::VecDeque;

use crate::mux::fmp4::timing::ticks_to_ns;
use crate::mux::fmp4::{Chunk, FragmentWriter, Sample};

/// Where a cut falls and what it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cut {
    at_ns: i64,
    new_segment: bool,
}

/// Durations that drive the leader's cuts.
#[derive(Clone, Copy, Debug)]
pub struct SegmenterOptions {
    pub segment_ns: i64,
    pub part_ns: i64,
}

/// A finished part of one track.
#[derive(Debug)]
pub struct PartOut {
    pub track: usize,
    /// Media sequence number of the segment the part belongs to.
    pub msn: u64,
    /// Index of the part within its segment.
    pub part: usize,
    pub chunk: Chunk,
    /// Sum of the part's sample durations, in ticks of the track's timescale.
    pub duration_ticks: u64,
    /// Time of the part's first sample on the stream timeline (ns).
    pub start_ns: i64,
    /// Begins with a sync sample.
    pub independent: bool,
    /// The first part of a new segment (the previous segment of this track is complete).
    pub starts_segment: bool,
}

struct TrackState {
    timescale: u32,
    writer: FragmentWriter,
    pending: Vec<Sample>,
    pending_start_ns: Option<i64>,
    msn: u64,
    part: usize,
    /// Cuts of the leader not yet applied to this track.
    cuts: VecDeque<Cut>,
    started: bool,
}

/// Cuts every track into parts and segments.
pub struct Segmenter {
    options: SegmenterOptions,
    leader: usize,
    tracks: Vec<TrackState>,
    segment_start_ns: Option<i64>,
    /// Keeps the leader's cuts bounded when a follower track never sends anything.
    max_pending_cuts: usize,
}

/// How many unapplied cuts a silent follower may collect before the oldest are dropped.
const MAX_PENDING_CUTS: usize = 256;

impl Segmenter {
    /// `timescales[i]` is track i's timescale; `leader` the track whose cuts rule.
    pub fn new(options: SegmenterOptions, timescales: &[u32], leader: usize) -> Self {
        Segmenter {
            options,
            leader,
            tracks: timescales
                .iter()
                .enumerate()
                .map(|(i, &timescale)| TrackState {
                    timescale,
                    writer: FragmentWriter::new(i as u32 + 1),
                    pending: Vec::new(),
                    pending_start_ns: None,
                    msn: 0,
                    part: 0,
                    cuts: VecDeque::new(),
                    started: false,
                })
                .collect(),
            segment_start_ns: None,
            max_pending_cuts: MAX_PENDING_CUTS,
        }
    }

    fn ns(&self, track: usize, ticks: u64) -> i64 {
        let ts = self.tracks[track].timescale;
        ticks_to_ns(i64::try_from(ticks).unwrap_or(i64::MAX), ts)
    }

    /// Adds one sample of `track` (decode order within the track). Returns the parts
    /// this completes (of this track only: other tracks complete theirs when their own
    /// samples pass the cut).
    pub fn push(&mut self, track: usize, sample: Sample) -> Vec<PartOut> {
        let mut out = Vec::new();
        if track >= self.tracks.len() {
            return out;
        }
        let at_ns = self.ns(track, sample.dts);
        if track == self.leader {
            if let Some(cut) = self.leader_cut(at_ns, sample.sync) {
                if let Some(p) = self.finish_part(track, cut.new_segment) {
                    out.push(p);
                }
                for (i, t) in self.tracks.iter_mut().enumerate() {
                    if i != self.leader {
                        t.cuts.push_back(cut);
                        if t.cuts.len() > self.max_pending_cuts {
                            t.cuts.pop_front();
                        }
                    }
                }
            }
        } else {
            while let Some(cut) = self.tracks[track].cuts.front().copied() {
                if cut.at_ns > at_ns {
                    break;
                }
                self.tracks[track].cuts.pop_front();
                if let Some(p) = self.finish_part(track, cut.new_segment) {
                    out.push(p);
                } else if cut.new_segment && self.tracks[track].started {
                    // Nothing pending at a segment cut: still move to the next segment.
                    let t = &mut self.tracks[track];
                    t.msn += 1;
                    t.part = 0;
                }
            }
        }
        let t = &mut self.tracks[track];
        t.started = true;
        t.pending_start_ns.get_or_insert(at_ns);
        t.pending.push(sample);
        out
    }

    /// The leader's rule: a segment at a sync sample once the segment is long enough; a
    /// part once the part is long enough.
    fn leader_cut(&mut self, at_ns: i64, sync: bool) -> Option<Cut> {
        let seg_start = *self.segment_start_ns.get_or_insert(at_ns);
        let t = &self.tracks[self.leader];
        let part_start = t.pending_start_ns?;
        if t.pending.is_empty() {
            return None;
        }
        if sync && at_ns - seg_start >= self.options.segment_ns {
            self.segment_start_ns = Some(at_ns);
            return Some(Cut {
                at_ns,
                new_segment: true,
            });
        }
        (at_ns - part_start >= self.options.part_ns).then_some(Cut {
            at_ns,
            new_segment: false,
        })
    }

    /// Writes the pending samples of `track` as a part; the next part starts a new
    /// segment when `new_segment`.
    fn finish_part(&mut self, track: usize, new_segment: bool) -> Option<PartOut> {
        let t = &mut self.tracks[track];
        if t.pending.is_empty() {
            return None;
        }
        let samples = std::mem::take(&mut t.pending);
        let start_ns = t.pending_start_ns.take().unwrap_or(0);
        let duration_ticks = samples.iter().map(|s| u64::from(s.duration)).sum();
        let independent = samples.first().is_some_and(|s| s.sync);
        let chunk = t.writer.write(&samples).ok()?;
        let part = PartOut {
            track,
            msn: t.msn,
            part: t.part,
            chunk,
            duration_ticks,
            start_ns,
            independent,
            starts_segment: t.part == 0,
        };
        if new_segment {
            t.msn += 1;
            t.part = 0;
        } else {
            t.part += 1;
        }
        Some(part)
    }

    /// The input ended: every track's pending samples become its last part.
    pub fn finish(&mut self) -> Vec<PartOut> {
        (0..self.tracks.len())
            .filter_map(|i| self.finish_part(i, true))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sample(dts: u64, duration: u32, sync: bool) -> Sample {
        Sample {
            dts,
            pts: dts,
            duration,
            sync,
            data: Bytes::from_static(b"x"),
        }
    }

    const MS: i64 = 1_000_000;

    fn options() -> SegmenterOptions {
        SegmenterOptions {
            segment_ns: 2000 * MS,
            part_ns: 200 * MS,
        }
    }

    /// 25 fps video (3600 ticks at 90 kHz) with a keyframe every `gop` frames, and 48 kHz
    /// AAC (1024-sample frames), interleaved by time. Returns every part produced.
    fn run(frames: u64, gop: u64) -> Vec<PartOut> {
        let mut s = Segmenter::new(options(), &[90_000, 48_000], 0);
        let mut parts = Vec::new();
        let mut audio = 0u64;
        for f in 0..frames {
            let t_ns = f as i64 * 40 * MS;
            while (audio as i64 * 1024 * 1_000_000_000 / 48_000) <= t_ns {
                parts.extend(s.push(1, sample(audio * 1024, 1024, true)));
                audio += 1;
            }
            parts.extend(s.push(0, sample(f * 3600, 3600, f % gop == 0)));
        }
        parts.extend(s.finish());
        parts
    }

    #[test]
    fn video_parts_are_five_frames_and_segments_are_whole_gops() {
        let parts = run(250, 50);
        let video: Vec<&PartOut> = parts.iter().filter(|p| p.track == 0).collect();
        // 10 s of 2 s GOPs: 5 segments of 10 parts of 200 ms.
        assert_eq!(video.len(), 50);
        for (i, p) in video.iter().enumerate() {
            assert_eq!(p.msn, i as u64 / 10);
            assert_eq!(p.part, i % 10);
            assert_eq!(p.duration_ticks, 5 * 3600);
            assert_eq!(p.independent, i % 10 == 0);
            assert_eq!(p.starts_segment, i % 10 == 0);
        }
    }

    #[test]
    fn a_long_gop_makes_a_long_segment_cut_only_at_keyframes() {
        let parts = run(300, 75); // 3 s GOPs
        let video: Vec<&PartOut> = parts.iter().filter(|p| p.track == 0).collect();
        let seg_starts: Vec<i64> = video
            .iter()
            .filter(|p| p.starts_segment)
            .map(|p| p.start_ns / MS)
            .collect();
        assert_eq!(seg_starts, vec![0, 3000, 6000, 9000]);
        assert!(
            video
                .iter()
                .filter(|p| p.starts_segment)
                .all(|p| p.independent)
        );
    }

    #[test]
    fn audio_follows_the_video_cuts() {
        let parts = run(250, 50);
        let video: Vec<&PartOut> = parts.iter().filter(|p| p.track == 0).collect();
        let audio: Vec<&PartOut> = parts.iter().filter(|p| p.track == 1).collect();
        assert_eq!(audio.len(), video.len());
        for (a, v) in audio.iter().zip(&video) {
            assert_eq!((a.msn, a.part), (v.msn, v.part));
            // Within one audio frame (21.3 ms) of the video part's start.
            assert!(
                (a.start_ns - v.start_ns).abs() <= 22 * MS,
                "{} vs {}",
                a.start_ns,
                v.start_ns
            );
        }
        // Every audio sample is in exactly one part.
        let total: u64 = audio.iter().map(|p| p.duration_ticks).sum();
        let pushed = (0..)
            .take_while(|a: &i64| a * 1024 * 1_000_000_000 / 48_000 <= 249 * 40 * MS)
            .count() as u64;
        assert_eq!(total, pushed * 1024);
    }

    #[test]
    fn parts_follow_each_other_without_gaps() {
        let parts = run(100, 50);
        let video: Vec<&PartOut> = parts.iter().filter(|p| p.track == 0).collect();
        for w in video.windows(2) {
            let end = w[0].start_ns + ticks_to_ns(w[0].duration_ticks as i64, 90_000);
            assert_eq!(w[1].start_ns, end);
            assert!(w[0].chunk.len > 0);
        }
    }

    #[test]
    fn a_silent_follower_does_not_collect_cuts_without_bound() {
        let mut s = Segmenter::new(options(), &[90_000, 48_000], 0);
        for f in 0..10_000u64 {
            s.push(0, sample(f * 3600, 3600, f % 50 == 0));
        }
        assert!(s.tracks[1].cuts.len() <= MAX_PENDING_CUTS);
    }
}
