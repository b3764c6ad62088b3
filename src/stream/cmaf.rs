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
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::RunBases;
use super::rendition::{PartData, RenditionInfo};
use crate::media::codec::{CmafInfo, CmafTrack, CodecConfig, cmaf_info};
use crate::media::{Codec, Track};
use crate::mux::arena::Arena;
use crate::mux::flac::G711ToFlac;
use crate::mux::fmp4::timing::{
    AudioTimer, DtsReorder, ReorderDepth, TimeMap, ns_to_ticks, opus_packet_samples, ticks_to_ns,
};
use crate::mux::fmp4::{
    Chunk, FragmentWriter, PrftSemantics, Sample, init_segment, ntp_timestamp, put_prft, put_styp,
    track_config,
};

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
    /// Decode time of the first sample, in the track's timescale (the chunk's tfdt).
    pub start_ticks: u64,
    /// Earliest presentation time of the part's samples, in the track's timescale: with
    /// B-frames it is later than `start_ticks` (DASH addresses segments by it).
    pub presentation_ticks: u64,
    /// Begins with a sync sample.
    pub independent: bool,
    /// The first part of a new segment (the previous segment of this track is complete).
    pub starts_segment: bool,
    /// The last part of its segment: the segment is complete with it.
    pub ends_segment: bool,
    /// Set on the part that completes the stream's first segment: the target duration
    /// (whole seconds) chosen from it, which every later segment keeps to.
    pub target_duration_s: Option<u32>,
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
    /// The leader's last sample duration: cuts fall at the sample nearest the target,
    /// within half of it, so a part of whole frames never overshoots for a rounding.
    leader_step_ns: i64,
    /// Keeps the leader's cuts bounded when a follower track never sends anything.
    max_pending_cuts: usize,
    /// EXT-X-TARGETDURATION: unknown until the first segment is cut (a segment is whole
    /// GOPs, so the stream's GOP decides it), then fixed.
    target_duration_s: Option<u32>,
    /// The target was just chosen: the part the cut completes announces it.
    announce_target: bool,
    /// Where chunk headers (`moof` + `mdat` header, `styp` + `prft`) are cut from: the
    /// parts of a few segments share one allocation.
    arena: Arena,
}

/// Chunk headers are ~100 bytes: a block holds those of a few segments of every track.
const HEAD_ARENA_BLOCK: usize = 16 * 1024;

/// The target duration a first segment of `len_ns` asks for: its length rounded to the
/// nearest second (EXTINF is compared after rounding), and never under the configured
/// segment duration rounded up.
fn target_for(len_ns: i64, segment_ns: i64) -> u32 {
    let configured = (segment_ns.max(1) + 999_999_999) / 1_000_000_000;
    let measured = (len_ns + 500_000_000) / 1_000_000_000;
    u32::try_from(configured.max(measured).max(1)).unwrap_or(u32::MAX)
}

/// How many unapplied cuts a silent follower may collect before the oldest are dropped.
const MAX_PENDING_CUTS: usize = 256;

impl Segmenter {
    /// `timescales[i]` is track i's timescale; `leader` the track whose cuts rule;
    /// `first_msn` the media sequence number of the first segment.
    /// `target_duration_s`: the stream's target duration if an earlier segmenter of the
    /// same stream chose it (it never changes during a stream).
    pub fn new(
        options: SegmenterOptions,
        timescales: &[u32],
        leader: usize,
        first_msn: u64,
        target_duration_s: Option<u32>,
    ) -> Self {
        Segmenter {
            options,
            leader,
            tracks: timescales
                .iter()
                .map(|&timescale| TrackState {
                    timescale,
                    // Every rendition is its own CMAF track file with one track, id 1.
                    writer: FragmentWriter::new(1),
                    pending: Vec::new(),
                    pending_start_ns: None,
                    msn: first_msn,
                    part: 0,
                    cuts: VecDeque::new(),
                    started: false,
                })
                .collect(),
            segment_start_ns: None,
            leader_step_ns: 0,
            max_pending_cuts: MAX_PENDING_CUTS,
            target_duration_s,
            announce_target: false,
            arena: Arena::new(HEAD_ARENA_BLOCK),
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
            let step = self.ns(track, u64::from(sample.duration));
            if let Some(cut) = self.leader_cut(at_ns, sample.sync, step) {
                if let Some(mut p) = self.finish_part(track, cut.new_segment, None) {
                    if std::mem::take(&mut self.announce_target) {
                        p.target_duration_s = self.target_duration_s;
                    }
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
            self.leader_step_ns = step;
        } else {
            while let Some(cut) = self.tracks[track].cuts.front().copied() {
                if cut.at_ns > at_ns {
                    break;
                }
                self.tracks[track].cuts.pop_front();
                if let Some(p) = self.finish_part(track, cut.new_segment, Some(cut.at_ns)) {
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
    /// part once the part is long enough. A GOP longer than the target duration (fixed
    /// by the first segment) is cut without a sync sample before the segment would
    /// round to more than the target: that segment is not independent, but the
    /// playlist stays valid. `step` is this sample's duration.
    fn leader_cut(&mut self, at_ns: i64, sync: bool, step: i64) -> Option<Cut> {
        let seg_start = *self.segment_start_ns.get_or_insert(at_ns);
        let t = &self.tracks[self.leader];
        let part_start = t.pending_start_ns?;
        if t.pending.is_empty() {
            return None;
        }
        let tolerance = self.leader_step_ns / 2;
        let len = at_ns - seg_start;
        let new_segment = if sync && len + tolerance >= self.options.segment_ns {
            if self.target_duration_s.is_none() {
                self.target_duration_s = Some(target_for(len, self.options.segment_ns));
                self.announce_target = true;
            }
            true
        } else {
            // Just under target + ½ s: EXTINF rounds to at most the target.
            self.target_duration_s.is_some_and(|target| {
                len + step.max(0) >= i64::from(target) * 1_000_000_000 + 500_000_000
            })
        };
        if new_segment {
            self.segment_start_ns = Some(at_ns);
            return Some(Cut {
                at_ns,
                new_segment: true,
            });
        }
        (at_ns - part_start + tolerance >= self.options.part_ns).then_some(Cut {
            at_ns,
            new_segment: false,
        })
    }

    /// Writes the pending samples of `track` that start before `until_ns` (all of them
    /// when None) as a part; the next part starts a new segment when `new_segment`.
    /// A follower's samples can be pending past the leader's cut: an input that sends
    /// audio ahead of video, or one long G.711 packet made into several FLAC frames.
    fn finish_part(
        &mut self,
        track: usize,
        new_segment: bool,
        until_ns: Option<i64>,
    ) -> Option<PartOut> {
        let split = until_ns.map_or(self.tracks[track].pending.len(), |until| {
            let t = &self.tracks[track];
            t.pending
                .iter()
                .position(|s| self.ns(track, s.dts) >= until)
                .unwrap_or(t.pending.len())
        });
        let later_ns = self.tracks[track]
            .pending
            .get(split)
            .map(|s| self.ns(track, s.dts));
        let t = &mut self.tracks[track];
        if split == 0 {
            return None;
        }
        let mut later = t.pending.split_off(split);
        let samples = &t.pending;
        let start_ns = t.pending_start_ns.take().unwrap_or(0);
        let duration_ticks = samples.iter().map(|s| u64::from(s.duration)).sum();
        let start_ticks = samples.first().map_or(0, |s| s.dts);
        let presentation_ticks = samples.iter().map(|s| s.pts).min().unwrap_or(start_ticks);
        let independent = samples.first().is_some_and(|s| s.sync);
        // Room for the `prft` (and `styp`) buffer the pipeline puts in front.
        let chunk = t.writer.write_in(samples, &mut self.arena, 1);
        // The samples are in the chunk now (or dropped with it); the vector is kept for
        // the next part, which begins with the samples past the cut.
        t.pending.clear();
        t.pending.append(&mut later);
        t.pending_start_ns = later_ns;
        let chunk = chunk.ok()?;
        let part = PartOut {
            track,
            msn: t.msn,
            part: t.part,
            chunk,
            duration_ticks,
            start_ns,
            start_ticks,
            presentation_ticks,
            independent,
            starts_segment: t.part == 0,
            ends_segment: new_segment,
            target_duration_s: None,
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
        // A first segment that ends here (the input went away before it was long
        // enough: a pusher or camera that drops early) still fixes the target duration,
        // or playlists would wait for one forever (found by tests/chaos.rs).
        let leader = self.leader;
        let announce = self.target_duration_s.is_none() && !self.tracks[leader].pending.is_empty();
        if announce {
            let t = &self.tracks[leader];
            let ticks: u64 = t.pending.iter().map(|s| u64::from(s.duration)).sum();
            let end = t.pending_start_ns.unwrap_or(0) + self.ns(leader, ticks);
            let len = end - self.segment_start_ns.unwrap_or(end);
            self.target_duration_s = Some(target_for(len, self.options.segment_ns));
        }
        (0..self.tracks.len())
            .filter_map(|i| {
                let mut p = self.finish_part(i, true, None)?;
                if announce && i == leader {
                    p.target_duration_s = self.target_duration_s;
                }
                Some(p)
            })
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
        let mut s = Segmenter::new(options(), &[90_000, 48_000], 0, 0, None);
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
    fn audio_sent_ahead_of_video_is_cut_at_the_video_cuts() {
        // G.711 at 8 kHz in packets of 1024 samples (128 ms) made into FLAC frames of
        // 20 ms or less: a packet's frames are all pushed when it arrives, ahead of the
        // video frames of the same time.
        let mut s = Segmenter::new(options(), &[90_000, 8_000], 0, 0, None);
        let mut parts = Vec::new();
        let mut audio = 0u64;
        for f in 0..250u64 {
            let t_ns = f as i64 * 40 * MS;
            while (audio as i64 * 1_000_000_000 / 8_000) <= t_ns + 128 * MS {
                for k in 0..7u64 {
                    let start = audio + 1024 * k / 7;
                    let len = audio + 1024 * (k + 1) / 7 - start;
                    parts.extend(s.push(1, sample(start, len as u32, true)));
                }
                audio += 1024;
            }
            parts.extend(s.push(0, sample(f * 3600, 3600, f % 50 == 0)));
        }
        let video: Vec<&PartOut> = parts.iter().filter(|p| p.track == 0).collect();
        let audio_parts: Vec<&PartOut> = parts.iter().filter(|p| p.track == 1).collect();
        assert!(audio_parts.len() > 40);
        for (a, v) in audio_parts.iter().zip(&video) {
            assert_eq!((a.msn, a.part), (v.msn, v.part));
            // Within one FLAC frame (≤ 20 ms) of the video part, not one packet (128 ms).
            assert!((a.start_ns - v.start_ns).abs() <= 20 * MS, "{a:?} vs {v:?}");
            let len_ns = ticks_to_ns(a.duration_ticks as i64, 8_000);
            assert!((len_ns - 200 * MS).abs() <= 20 * MS, "{len_ns} ns: {a:?}");
        }
        for w in audio_parts.windows(2) {
            let end = w[0].start_ticks + w[0].duration_ticks;
            assert_eq!(w[1].start_ticks, end, "no audio lost or repeated at a cut");
        }
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
    fn parts_are_whole_frames_that_never_overshoot_the_target_at_30_fps() {
        // 30 fps (3000 ticks) against a 200 ms target: 6 frames are 199.99 ms after
        // rounding to ns; the half-frame tolerance cuts there, not at 7 (233 ms).
        for (ticks, part_ns) in [(3000u32, 200 * MS), (3003, 200_200_000)] {
            let mut s = Segmenter::new(
                SegmenterOptions {
                    segment_ns: 2000 * MS,
                    part_ns,
                },
                &[90_000],
                0,
                0,
                None,
            );
            let mut parts = Vec::new();
            for f in 0..300u64 {
                parts.extend(s.push(0, sample(f * u64::from(ticks), ticks, f % 60 == 0)));
            }
            for p in &parts {
                let frames = p.duration_ticks / u64::from(ticks);
                assert!(
                    frames == 6 || (p.starts_segment && frames <= 6),
                    "{frames} frames at {ticks}"
                );
                assert!(ticks_to_ns(p.duration_ticks as i64, 90_000) <= part_ns);
            }
        }
    }

    #[test]
    fn the_first_segment_chooses_the_target_duration_once() {
        let parts = run(300, 75); // 3 s GOPs against 2 s segments
        let targets: Vec<(u64, u32)> = parts
            .iter()
            .filter_map(|p| p.target_duration_s.map(|t| (p.msn, t)))
            .collect();
        // Announced once, by the video part that completes segment 0.
        assert_eq!(targets, vec![(0, 3)]);
        let announcer = parts
            .iter()
            .find(|p| p.target_duration_s.is_some())
            .unwrap();
        assert!(announcer.ends_segment && announcer.track == 0);
        assert_eq!(target_for(2_000_000_000, 2_000_000_000), 2);
        assert_eq!(target_for(2_490_000_000, 2_000_000_000), 2);
        assert_eq!(target_for(2_500_000_000, 2_000_000_000), 3);
        assert_eq!(target_for(1_000_000_000, 1_500_000_000), 2);
    }

    #[test]
    fn a_gop_longer_than_the_target_is_cut_without_a_keyframe() {
        // Keyframes at 0 s, 2 s, then only from 10 s on every 2 s: the target is 2 s, so
        // the 8 s GOP is cut into segments that never round to more than 2 s.
        let mut s = Segmenter::new(options(), &[90_000], 0, 0, None);
        let mut parts = Vec::new();
        for f in 0..400u64 {
            let sync = f == 0 || f == 50 || (f >= 250 && f % 50 == 0);
            parts.extend(s.push(0, sample(f * 3600, 3600, sync)));
        }
        parts.extend(s.finish());
        let mut segments: Vec<(u64, bool)> = Vec::new(); // (ticks, independent)
        for p in &parts {
            if p.starts_segment {
                segments.push((0, p.independent));
            }
            segments.last_mut().unwrap().0 += p.duration_ticks;
        }
        let complete = &segments[..segments.len() - 1];
        assert!(complete.len() >= 6, "{segments:?}");
        for &(ticks, _) in complete {
            assert!(
                ticks < 225_000,
                "{} s rounds above 2",
                ticks as f64 / 90_000.0
            );
        }
        assert!(complete[0].1 && complete[1].1);
        assert!(complete.iter().any(|&(_, independent)| !independent));
        // Segments start at keyframes again once one comes when a segment is due.
        assert!(
            parts
                .iter()
                .any(|p| p.starts_segment && p.independent && p.start_ns >= 10_000 * MS)
        );
    }

    #[test]
    fn a_silent_follower_does_not_collect_cuts_without_bound() {
        let mut s = Segmenter::new(options(), &[90_000, 48_000], 0, 0, None);
        for f in 0..10_000u64 {
            s.push(0, sample(f * 3600, 3600, f % 50 == 0));
        }
        assert!(s.tracks[1].cuts.len() <= MAX_PENDING_CUTS);
    }
}

/// A rendition and its init segment.
pub type RenditionInit = (RenditionInfo, Bytes);

/// What the CMAF side of a stream hands to the event loop.
#[derive(Debug)]
pub enum CmafUpdate {
    /// A new set of renditions (the first, or after the tracks changed): their init
    /// segments. Renditions are in track order; tracks fMP4 cannot carry are left out.
    Renditions {
        list: Vec<RenditionInit>,
        /// PART-TARGET: the part duration in whole frames of the leading track.
        part_target_s: f64,
        /// Names the init segments (`init{id}.mp4`): the msn of their first segment,
        /// unique across runs.
        init_id: u64,
    },
    /// A finished part of rendition `rendition` (index into the last `Renditions`).
    Part {
        rendition: usize,
        msn: u64,
        part: PartData,
        starts_segment: bool,
        ends_segment: bool,
        program_date_time_ms: i64,
    },
    /// The tracks make no rendition at all (every one is left out: an MJPEG camera): HLS
    /// and DASH have nothing to offer until the next `Renditions`, so requests need not
    /// wait for any.
    NoRenditions,
    /// The stream's target duration, chosen when its first segment was cut (before
    /// that segment's last part); it never changes.
    TargetDuration(u32),
    /// The input ended: the last parts were sent; every segment is complete.
    End,
}

enum Timing {
    Video(DtsReorder),
    Audio {
        timer: AudioTimer,
        codec: Codec,
        /// G.711 is re-encoded: each frame becomes a FLAC frame of the same samples.
        transcode: Option<Box<G711ToFlac>>,
    },
}

struct PipelineTrack {
    /// Index among the renditions (None: not carried).
    rendition: Option<usize>,
    timing: Timing,
    map: TimeMap,
}

/// A track's frame interval when it is fixed and known before the first part: video
/// from the track's default duration or the bitstream's frame rate, AAC from its frame
/// length.
fn leader_interval_ns(track: &Track, info: &CmafInfo) -> Option<i64> {
    if let Some(v) = &info.video {
        let from_rate = v
            .frame_rate
            .filter(|&(n, d)| n > 0 && d > 0)
            .map(|(n, d)| (1_000_000_000.0 * f64::from(d) / f64::from(n)).round() as i64);
        return track
            .default_duration_ns
            .and_then(|d| i64::try_from(d).ok())
            .filter(|&d| d > 0)
            .or(from_rate);
    }
    match (track.codec, &info.audio) {
        (Codec::Aac, Some(a)) if a.sample_rate > 0 => {
            Some(1024 * 1_000_000_000 / i64::from(a.sample_rate))
        }
        _ => None,
    }
}

impl PipelineTrack {
    /// A track HLS/DASH do not carry: its frames are ignored.
    fn left_out() -> Self {
        PipelineTrack {
            rendition: None,
            timing: Timing::Audio {
                timer: AudioTimer::new(),
                codec: Codec::Pcm,
                transcode: None,
            },
            map: TimeMap::new(1000, 0),
        }
    }
}

/// From a stream's frames (output timeline, ns) to CMAF parts: per track, decode times
/// (rebuilt for B-frames) and sample durations in the track's timescale, then the
/// segmenter's cuts, then `moof`+`mdat` chunks.
pub struct CmafPipeline {
    tracks: Vec<PipelineTrack>,
    segmenter: Segmenter,
    /// Which segmenter track each rendition is.
    rendition_track: Vec<usize>,
    timescales: Vec<u32>,
    /// (Unix ns, stream ns): where the stream timeline meets the wall clock.
    wall_anchor: (i64, i64),
    /// One frame's timed samples, kept between frames.
    samples: Vec<Sample>,
    /// A part's `styp` + `prft`, before they go into the arena.
    prefix: Vec<u8>,
}

impl CmafPipeline {
    /// Builds the pipeline for `tracks` when the first keyframe (`keyframe`, of track
    /// `keyframe_track`) is known: VP9's configuration is read from it. Returns the
    /// renditions' init segments too, and one warning line per track left out.
    pub fn new(
        tracks: &[Track],
        keyframe_track: usize,
        keyframe: &[u8],
        options: SegmenterOptions,
        bases: RunBases,
        target_duration_s: Option<u32>,
        wall_anchor: (i64, i64),
    ) -> (Option<(CmafPipeline, CmafUpdate)>, Vec<String>) {
        let first_msn = bases.first_msn;
        let mut warnings = Vec::new();
        let mut pipeline_tracks: Vec<PipelineTrack> = Vec::new();
        let mut renditions = Vec::new();
        let mut timescales = Vec::new();
        let mut rendition_track = Vec::new();
        let mut frame_intervals: Vec<Option<i64>> = Vec::new();
        for (i, track) in tracks.iter().enumerate() {
            let key = (i == keyframe_track).then_some(keyframe);
            let info = match cmaf_info(track, key) {
                Ok(CmafTrack::Carried(info)) => info,
                Ok(CmafTrack::NotCarried(why)) => {
                    warnings.push(format!("track {}: {why}", i + 1));
                    pipeline_tracks.push(PipelineTrack::left_out());
                    continue;
                }
                Err(e) => {
                    warnings.push(format!("track {}: left out of HLS/DASH: {e}", i + 1));
                    pipeline_tracks.push(PipelineTrack::left_out());
                    continue;
                }
            };
            let config = track_config(&info, 1);
            let init = match init_segment(&config) {
                Ok(b) => b,
                Err(e) => {
                    warnings.push(format!("track {}: left out of HLS/DASH: {e}", i + 1));
                    pipeline_tracks.push(PipelineTrack::left_out());
                    continue;
                }
            };
            let video = info.video.is_some();
            let timing = match &info.video {
                Some(v) => {
                    let frame = track
                        .default_duration_ns
                        .and_then(|d| u32::try_from(ns_to_ticks(d as i64, info.timescale)).ok());
                    let depth = if v.reorder_frames > 0 {
                        ReorderDepth::Fixed(v.reorder_frames as usize)
                    } else {
                        // Without VUI the SPS does not say; learn it from the stream.
                        ReorderDepth::Adaptive {
                            initial: 0,
                            probe: 16,
                        }
                    };
                    Timing::Video(DtsReorder::new(depth).with_frame_duration(frame))
                }
                None => {
                    let transcode = match track.codec {
                        Codec::Alaw | Codec::Mulaw => {
                            // cmaf_info described the FLAC stream (its STREAMINFO is in
                            // the init segment); the encoder must write that stream.
                            let a = info.audio.as_ref();
                            let (rate, channels) =
                                a.map_or((0, 0), |a| (a.sample_rate, a.channels));
                            let t = G711ToFlac::new(track.codec, rate, channels);
                            match (t, &info.config) {
                                (Some(t), CodecConfig::Flac(c))
                                    if c.stream_info == t.stream_info() =>
                                {
                                    Some(Box::new(t))
                                }
                                _ => {
                                    warnings.push(format!(
                                        "track {}: left out of HLS/DASH: {} at {rate} Hz, \
                                         {channels} channels: no FLAC encoding",
                                        i + 1,
                                        track.codec.name()
                                    ));
                                    pipeline_tracks.push(PipelineTrack::left_out());
                                    continue;
                                }
                            }
                        }
                        _ => None,
                    };
                    Timing::Audio {
                        timer: AudioTimer::new(),
                        codec: track.codec,
                        transcode,
                    }
                }
            };
            let frame_rate = info
                .video
                .as_ref()
                .and_then(|v| v.frame_rate)
                .and_then(|(n, d)| (d != 0).then(|| f64::from(n) / f64::from(d)));
            let id = format!("{}{}", if video { "v" } else { "a" }, i);
            renditions.push((
                RenditionInfo {
                    id,
                    video,
                    codec_string: info.codec_string.clone(),
                    timescale: info.timescale,
                    width: info.video.as_ref().map_or(0, |v| v.width),
                    height: info.video.as_ref().map_or(0, |v| v.height),
                    frame_rate,
                    sample_rate: info.audio.as_ref().map_or(0, |a| a.sample_rate),
                    channels: info.audio.as_ref().map_or(0, |a| a.channels),
                },
                init,
            ));
            pipeline_tracks.push(PipelineTrack {
                rendition: Some(renditions.len() - 1),
                timing,
                map: TimeMap::new(info.timescale, -bases.media_epoch_ns),
            });
            rendition_track.push(timescales.len());
            timescales.push(info.timescale);
            frame_intervals.push(leader_interval_ns(track, &info));
        }
        if renditions.is_empty() {
            return (None, warnings);
        }
        let leader = renditions.iter().position(|(r, _)| r.video).unwrap_or(0);
        let mut options = options;
        if let Some(interval) = frame_intervals.get(leader).copied().flatten() {
            // Parts of a whole number of frames: PART-TARGET is that many frame
            // intervals, so every part is one (29.97 fps: 6 frames, 200.2 ms).
            let frames = (options.part_ns as f64 / interval as f64).round().max(1.0);
            options.part_ns = (frames * interval as f64).round() as i64;
        }
        let pipeline = CmafPipeline {
            tracks: pipeline_tracks,
            segmenter: Segmenter::new(options, &timescales, leader, first_msn, target_duration_s),
            rendition_track,
            timescales,
            // The segmenter's times are CMAF media times: the stream timeline plus the
            // run's epoch.
            wall_anchor: (
                wall_anchor.0,
                wall_anchor.1.saturating_add(bases.media_epoch_ns),
            ),
            samples: Vec::new(),
            prefix: Vec::with_capacity(64),
        };
        let part_target_s = options.part_ns as f64 / 1e9;
        let update = CmafUpdate::Renditions {
            list: renditions,
            part_target_s,
            init_id: first_msn,
        };
        (Some((pipeline, update)), warnings)
    }

    /// Wall-clock time (Unix ns) of `start_ns` on the stream timeline.
    fn wall_ns(&self, start_ns: i64) -> i64 {
        let (wall, media) = self.wall_anchor;
        wall.saturating_add(start_ns - media)
    }

    fn parts_to_updates(&mut self, parts: Vec<PartOut>, out: &mut Vec<CmafUpdate>) {
        for p in parts {
            if let Some(target) = p.target_duration_s {
                out.push(CmafUpdate::TargetDuration(target));
            }
            let ts = self.timescales.get(p.track).copied().unwrap_or(1).max(1);
            // The wall clock of the part's first presentation (later than its first
            // decode time with B-frames): its program date time and its prft.
            let reorder_ns = ticks_to_ns(
                i64::try_from(p.presentation_ticks.saturating_sub(p.start_ticks)).unwrap_or(0),
                ts,
            );
            let wall_ns = self.wall_ns(p.start_ns) + reorder_ns;
            let pdt = wall_ns.div_euclid(1_000_000);
            // A `styp` opens each segment; a `prft` in front of every chunk ties its
            // first presentation time to the wall clock of the same anchor as the
            // program date time and availabilityStartTime (LL-DASH players measure
            // their latency with it).
            let prefix = &mut self.prefix;
            prefix.clear();
            if p.starts_segment {
                put_styp(prefix);
            }
            let wall = UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall_ns).unwrap_or(0));
            put_prft(
                prefix,
                1,
                ntp_timestamp(wall),
                p.presentation_ticks,
                PrftSemantics::Input,
            );
            let prefix = self
                .segmenter
                .arena
                .write(prefix.len(), |b| b.extend_from_slice(prefix));
            let len = prefix.len() as u64 + p.chunk.len;
            // The chunk's buffers have room for this one: no reallocation.
            let mut buffers = p.chunk.buffers;
            buffers.insert(0, prefix);
            out.push(CmafUpdate::Part {
                rendition: p.track,
                msn: p.msn,
                part: PartData {
                    len,
                    buffers,
                    duration_s: p.duration_ticks as f64 / f64::from(ts),
                    independent: p.independent,
                    start_ticks: p.start_ticks,
                    duration_ticks: p.duration_ticks,
                    presentation_ticks: p.presentation_ticks,
                },
                starts_segment: p.starts_segment,
                ends_segment: p.ends_segment,
                program_date_time_ms: pdt,
            });
        }
    }

    /// One frame of stream track `track` at `pts_ns` on the output timeline.
    pub fn push(
        &mut self,
        track: usize,
        pts_ns: i64,
        keyframe: bool,
        data: Bytes,
    ) -> Vec<CmafUpdate> {
        let mut out = Vec::new();
        self.push_into(track, pts_ns, keyframe, data, &mut out);
        out
    }

    /// [`CmafPipeline::push`], appending the updates to `out`.
    pub fn push_into(
        &mut self,
        track: usize,
        pts_ns: i64,
        keyframe: bool,
        data: Bytes,
        out: &mut Vec<CmafUpdate>,
    ) {
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        let Some(rendition) = t.rendition else {
            return;
        };
        let pts = t.map.ticks(pts_ns);
        let mut samples = std::mem::take(&mut self.samples);
        match &mut t.timing {
            Timing::Video(reorder) => {
                reorder.push(pts, keyframe, data);
                while let Some(s) = reorder.pop() {
                    samples.push(s);
                }
            }
            Timing::Audio {
                timer,
                transcode: Some(tc),
                ..
            } => {
                // One FLAC frame per G.711 frame (several past 65535 samples, none for an
                // empty one), each at its sample offset: ticks are samples here.
                let mut at = pts;
                for (flac, len) in tc.transcode(&data) {
                    timer.push(at, Some(len), flac);
                    at = at.saturating_add(i64::from(len));
                }
                while let Some(s) = timer.pop() {
                    samples.push(s);
                }
            }
            Timing::Audio { timer, codec, .. } => {
                let frame_len = match codec {
                    Codec::Aac => Some(1024),
                    Codec::Opus => opus_packet_samples(&data),
                    _ => None,
                };
                timer.push(pts, frame_len, data);
                while let Some(s) = timer.pop() {
                    samples.push(s);
                }
            }
        }
        self.segment(rendition, &mut samples, out);
        self.samples = samples;
    }

    /// Hands a rendition's timed samples to the segmenter (leaving `samples` empty);
    /// collects the parts they finish.
    fn segment(&mut self, rendition: usize, samples: &mut Vec<Sample>, out: &mut Vec<CmafUpdate>) {
        let seg_track = self.rendition_track[rendition];
        for s in samples.drain(..) {
            let parts = self.segmenter.push(seg_track, s);
            self.parts_to_updates(parts, out);
        }
    }

    /// The input ended: flush every track and close the last segments.
    pub fn finish(&mut self) -> Vec<CmafUpdate> {
        let mut out = Vec::new();
        for i in 0..self.tracks.len() {
            let Some(rendition) = self.tracks[i].rendition else {
                continue;
            };
            let mut samples = Vec::new();
            match &mut self.tracks[i].timing {
                Timing::Video(r) => {
                    r.flush(None);
                    while let Some(s) = r.pop() {
                        samples.push(s);
                    }
                }
                Timing::Audio { timer, .. } => {
                    timer.flush(None);
                    while let Some(s) = timer.pop() {
                        samples.push(s);
                    }
                }
            }
            self.segment(rendition, &mut samples, &mut out);
        }
        let parts = self.segmenter.finish();
        self.parts_to_updates(parts, &mut out);
        out.push(CmafUpdate::End);
        out
    }
}

#[cfg(test)]
mod g711_tests {
    use super::*;
    use crate::media::AudioInfo;

    /// 2 s segments, 200 ms parts, numbering and media time from 0.
    fn pipeline_settings() -> (SegmenterOptions, RunBases) {
        let options = SegmenterOptions {
            segment_ns: 2_000_000_000,
            part_ns: 200_000_000,
        };
        let bases = RunBases {
            first_msn: 0,
            media_epoch_ns: 0,
        };
        (options, bases)
    }

    /// MJPEG is left out of HLS/DASH with one warning line; what else the stream has goes
    /// on (G.711 as FLAC here); alone it makes no pipeline.
    #[test]
    fn mjpeg_is_left_out_with_one_warning() {
        let (options, bases) = pipeline_settings();
        let mjpeg = Track {
            codec: Codec::Mjpeg,
            codec_id: "V_MJPEG".into(),
            codec_private: None,
            video: Some(crate::media::VideoInfo {
                width: 320,
                height: 240,
                ..Default::default()
            }),
            audio: None,
            default_duration_ns: None,
            codec_delay_ns: None,
            seek_pre_roll_ns: None,
            language: None,
        };
        const JPEG: [u8; 4] = [0xFF, 0xD8, 0xFF, 0xD9];
        let tracks = [mjpeg.clone(), g711_track(Codec::Mulaw, 7)];
        let (pipeline, warnings) =
            CmafPipeline::new(&tracks, 0, &JPEG, options, bases, None, (0, 0));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("track 1: mjpeg is not carried in fMP4"),
            "{warnings:?}"
        );
        let (mut p, update) = pipeline.expect("the G.711 track is carried");
        let CmafUpdate::Renditions { list, .. } = update else {
            panic!("{update:?}")
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0.id, "a1");
        // JPEG frames go nowhere; the audio makes parts.
        let mut out = Vec::new();
        for i in 0..150i64 {
            out.extend(p.push(0, i * 100_000_000, true, Bytes::from_static(&JPEG)));
            out.extend(p.push(1, i * 100_000_000, true, Bytes::from(vec![0x55; 800])));
        }
        assert!(out.iter().any(|u| matches!(u, CmafUpdate::Part { .. })));
        assert!(
            out.iter()
                .all(|u| !matches!(u, CmafUpdate::Part { rendition, .. } if *rendition != 0))
        );

        let (pipeline, warnings) =
            CmafPipeline::new(&[mjpeg], 0, &JPEG, options, bases, None, (0, 0));
        assert!(pipeline.is_none());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    fn g711_track(codec: Codec, tag: u16) -> Track {
        Track {
            codec,
            codec_id: "A_MS/ACM".into(),
            codec_private: Some(crate::ingest::rtsp::waveformatex(tag, 8000, 1)),
            video: None,
            audio: Some(AudioInfo {
                sample_rate: 8000.0,
                channels: 1,
                bit_depth: Some(8),
            }),
            default_duration_ns: None,
            codec_delay_ns: None,
            seek_pre_roll_ns: None,
            language: None,
        }
    }

    /// G.711 frames become FLAC samples of 20 ms at most; an empty frame none, a long
    /// frame several.
    #[test]
    fn g711_frames_become_flac_samples() {
        let (options, bases) = pipeline_settings();
        let tracks = [g711_track(Codec::Mulaw, 7)];
        let (pipeline, warnings) = CmafPipeline::new(&tracks, 0, &[], options, bases, None, (0, 0));
        assert!(warnings.is_empty(), "{warnings:?}");
        let (mut p, update) = pipeline.expect("the G.711 track is carried");
        let CmafUpdate::Renditions { list, .. } = update else {
            panic!("{update:?}")
        };
        assert_eq!(list[0].0.codec_string, "flac");
        assert_eq!(list[0].0.timescale, 8000);
        let init = &list[0].1;
        assert!(init.windows(4).any(|w| w == b"dfLa"));

        let mut out = Vec::new();
        let frame: Vec<u8> = (0..160u32).map(|i| (i * 7) as u8).collect();
        for i in 0..50i64 {
            out.extend(p.push(0, i * 20_000_000, true, Bytes::from(frame.clone())));
        }
        out.extend(p.push(0, 1_000_000_000, true, Bytes::new()));
        out.extend(p.push(0, 1_000_000_000, true, Bytes::from(vec![0x55; 70_000])));
        out.extend(p.finish());
        let mut ticks = 0;
        let mut sync_codes = 0;
        for u in &out {
            if let CmafUpdate::Part { part, .. } = u {
                ticks += part.duration_ticks;
                for b in &part.buffers {
                    sync_codes += b.starts_with(&[0xFF, 0xF9]) as usize;
                }
            }
        }
        assert_eq!(ticks, 50 * 160 + 70_000);
        // Each sample is its own buffer: 50 frames of 20 ms, then 70 000 samples in
        // frames of 20 ms at most (438 of 159 or 160).
        assert_eq!(sync_codes, 50 + 70_000usize.div_ceil(160));
        assert!(matches!(out.last(), Some(CmafUpdate::End)));
    }
}
