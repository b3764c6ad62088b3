//! One continuous output timeline across loops, reconnects and re-based inputs.

/// Where the first frame lands. Frames that present before it (audio that starts before
/// the first keyframe, B-frame reordering) still get a timestamp ≥ 0, never a clamped one.
pub const ORIGIN_NS: i64 = 1_000_000_000;
/// Input timestamps further than this behind the timeline are a new clock, not jitter.
const MAX_BACKWARD_NS: i64 = 2_000_000_000;
/// Input timestamps this far ahead of the timeline are a jump, not a pause.
const MAX_FORWARD_NS: i64 = 30_000_000_000;

#[derive(Clone, Copy, Debug, Default)]
struct TrackClock {
    last_out: Option<i64>,
    /// The smallest positive step between two frames: the frame interval, whatever order
    /// (decode or presentation) the frames arrive in.
    min_step: Option<i64>,
    /// This segment's span of the track on the output timeline.
    first: Option<i64>,
    end: i64,
}

/// Maps input presentation times to the stream's output timeline (nanoseconds).
#[derive(Debug, Default)]
pub struct Timeline {
    offset: i64,
    started: bool,
    rebase_pending: bool,
    /// The end of the latest frame on the output timeline.
    end: i64,
    clocks: Vec<TrackClock>,
    /// Where the current segment's first frame landed.
    segment_first_out: i64,
    warned_jump: bool,
    /// The first clock jump (ms), until the publisher takes it to log with the stream's
    /// name (this type does not know it).
    jump_report: Option<i64>,
}

impl Timeline {
    /// The first clock jump (ms) since the stream began, once.
    pub fn take_jump_report(&mut self) -> Option<i64> {
        self.jump_report.take()
    }

    pub fn set_track_count(&mut self, n: usize) {
        self.clocks.resize(n, TrackClock::default());
    }

    /// The next frame starts a new input clock; the stream goes on where it ended.
    pub fn begin_segment(&mut self) {
        self.rebase_pending = true;
    }

    /// The length of the segment so far: its longest track's span. A loop of a file
    /// repeats with this period, so every track continues one frame after its own end
    /// (a track shorter than the longest gets a gap of the difference, never an overlap).
    fn segment_period(&self) -> Option<i64> {
        self.clocks
            .iter()
            .filter_map(|c| c.first.map(|f| c.end - f))
            .max()
    }

    fn start_segment(&mut self, first_out: i64, pts: i64) {
        self.offset = first_out.saturating_sub(pts);
        self.segment_first_out = first_out;
        for c in &mut self.clocks {
            c.last_out = None;
            c.first = None;
        }
    }

    pub fn map(&mut self, track: usize, pts: i64, duration: Option<u64>) -> i64 {
        if !self.started {
            self.started = true;
            self.end = ORIGIN_NS;
            self.start_segment(ORIGIN_NS, pts);
        } else if self.rebase_pending {
            self.rebase_pending = false;
            let first = match self.segment_period() {
                Some(p) => self.segment_first_out.saturating_add(p),
                None => self.end,
            };
            self.start_segment(first, pts);
        }
        let mut out = pts.saturating_add(self.offset);
        if out < self.end.saturating_sub(MAX_BACKWARD_NS)
            || out > self.end.saturating_add(MAX_FORWARD_NS)
        {
            if !self.warned_jump {
                self.jump_report = Some((out - self.end) / 1_000_000);
                self.warned_jump = true;
            }
            self.start_segment(self.end, pts);
            out = self.end;
        }
        let out = out.max(0);
        let Some(clock) = self.clocks.get_mut(track) else {
            return out;
        };
        if let Some(prev) = clock.last_out {
            let step = (out - prev).abs();
            if step > 0 {
                clock.min_step = Some(clock.min_step.map_or(step, |m| m.min(step)));
            }
        }
        clock.last_out = Some(out);
        let step = duration
            .and_then(|d| i64::try_from(d).ok())
            .or(clock.min_step)
            .unwrap_or(0);
        clock.first = Some(clock.first.map_or(out, |f| f.min(out)));
        clock.end = clock.end.max(out.saturating_add(step));
        self.end = self.end.max(clock.end);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn starts_at_the_origin_and_continues_across_segments() {
        let mut t = Timeline::default();
        t.set_track_count(1);
        assert_eq!(t.map(0, 5_000, Some(40)), ORIGIN_NS);
        assert_eq!(t.map(0, 5_040, Some(40)), ORIGIN_NS + 40);
        t.begin_segment();
        // The second pass starts again at the input's first timestamp.
        assert_eq!(t.map(0, 5_000, Some(40)), ORIGIN_NS + 80);
        assert_eq!(t.map(0, 5_040, Some(40)), ORIGIN_NS + 120);
    }

    #[test]
    fn frames_before_the_first_keep_their_distance() {
        let mut t = Timeline::default();
        t.set_track_count(2);
        let video = t.map(0, 21 * MS, None);
        let audio = t.map(1, 0, None);
        assert_eq!(video - audio, 21 * MS);
    }

    #[test]
    fn a_loop_with_b_frames_and_a_late_video_start_leaves_no_overlap_and_no_gap() {
        // Video at 21 ms + 40 ms steps in decode order I P B B; audio from 0 in 20 ms steps.
        let mut t = Timeline::default();
        t.set_track_count(2);
        let pass = |t: &mut Timeline| {
            let mut v = Vec::new();
            let mut a = Vec::new();
            for gop in 0..5i64 {
                let base = 21 + gop * 160;
                for off in [0, 120, 40, 80] {
                    v.push(t.map(0, (base + off) * MS, None));
                }
                for k in 0..8 {
                    a.push(t.map(1, (gop * 160 + k * 20) * MS, None));
                }
            }
            (v, a)
        };
        let (v1, a1) = pass(&mut t);
        t.begin_segment();
        let (v2, a2) = pass(&mut t);
        let vmax = *v1.iter().max().unwrap();
        assert_eq!(
            *v2.iter().min().unwrap() - vmax,
            40 * MS,
            "video continues one frame later"
        );
        let amax = *a1.iter().max().unwrap();
        assert_eq!(
            *a2.iter().min().unwrap() - amax,
            20 * MS,
            "audio continues one frame later"
        );
        // A third pass continues the same way.
        t.begin_segment();
        let (v3, _) = pass(&mut t);
        assert_eq!(
            *v3.iter().min().unwrap() - *v2.iter().max().unwrap(),
            40 * MS
        );
    }

    #[test]
    fn without_durations_uses_the_frame_interval() {
        let mut t = Timeline::default();
        t.set_track_count(1);
        t.map(0, 0, None);
        t.map(0, 40 * MS, None);
        t.begin_segment();
        assert_eq!(t.map(0, 0, None), ORIGIN_NS + 80 * MS);
    }

    #[test]
    fn a_clock_jump_is_rebased() {
        let mut t = Timeline::default();
        t.set_track_count(1);
        t.map(0, 1_000_000_000_000, Some(40 * MS as u64));
        assert_eq!(t.take_jump_report(), None);
        let out = t.map(0, 0, Some(40 * MS as u64));
        assert_eq!(out, ORIGIN_NS + 40 * MS);
        // 1000 s back from the end of the first (40 ms) frame: reported once, for the
        // publisher to log with the stream's name.
        assert_eq!(t.take_jump_report(), Some(-1_000_040));
        assert_eq!(t.take_jump_report(), None);
        assert_eq!(t.map(0, 40 * MS, Some(40 * MS as u64)), ORIGIN_NS + 80 * MS);
        t.map(0, 900_000 * MS, Some(40 * MS as u64));
        assert_eq!(t.take_jump_report(), None, "logged once per stream");
    }
}
