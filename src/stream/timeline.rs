//! One continuous output timeline across loops, reconnects and re-based inputs.

use log::warn;

/// Input timestamps further than this behind the timeline are a new clock, not jitter.
const MAX_BACKWARD_NS: i64 = 2_000_000_000;
/// Input timestamps this far ahead of the timeline are a jump, not a pause.
const MAX_FORWARD_NS: i64 = 30_000_000_000;

/// Maps input presentation times to the stream's output timeline (nanoseconds, starting at
/// 0 and never going back by more than B-frame reordering and track interleaving do).
#[derive(Debug, Default)]
pub struct Timeline {
    offset: i64,
    rebase_pending: bool,
    started: bool,
    /// The end of the latest frame seen on the output timeline.
    end: i64,
    last_pts: Vec<Option<i64>>,
    warned_jump: bool,
}

impl Timeline {
    pub fn set_track_count(&mut self, n: usize) {
        self.last_pts = vec![None; n];
    }

    /// The next frame starts a new input clock; place it where the timeline ended.
    pub fn begin_segment(&mut self) {
        self.rebase_pending = true;
        self.last_pts.iter_mut().for_each(|p| *p = None);
    }

    pub fn map(&mut self, track: usize, pts: i64, duration: Option<u64>) -> i64 {
        if !self.started || self.rebase_pending {
            self.offset = self.end.saturating_sub(pts);
            self.started = true;
            self.rebase_pending = false;
        }
        let mut out = pts.saturating_add(self.offset);
        if out < self.end.saturating_sub(MAX_BACKWARD_NS)
            || out > self.end.saturating_add(MAX_FORWARD_NS)
        {
            if !self.warned_jump {
                warn!(
                    "input clock jumped by {} ms; re-basing the timeline (logged once)",
                    (out - self.end) / 1_000_000
                );
                self.warned_jump = true;
            }
            self.offset = self.end.saturating_sub(pts);
            self.last_pts.iter_mut().for_each(|p| *p = None);
            out = self.end;
        }
        let out = out.max(0);
        let step = match (duration, self.last_pts.get(track).copied().flatten()) {
            (Some(d), _) => i64::try_from(d).unwrap_or(0),
            (None, Some(prev)) if out > prev => out - prev,
            _ => 0,
        };
        if let Some(slot) = self.last_pts.get_mut(track) {
            *slot = Some(out);
        }
        self.end = self.end.max(out.saturating_add(step));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_zero_and_continues_across_segments() {
        let mut t = Timeline::default();
        t.set_track_count(1);
        assert_eq!(t.map(0, 5_000, Some(40)), 0);
        assert_eq!(t.map(0, 5_040, Some(40)), 40);
        t.begin_segment();
        // The second pass starts again at the input's first timestamp.
        assert_eq!(t.map(0, 5_000, Some(40)), 80);
        assert_eq!(t.map(0, 5_040, Some(40)), 120);
    }

    #[test]
    fn without_durations_uses_the_last_step() {
        let mut t = Timeline::default();
        t.set_track_count(1);
        t.map(0, 0, None);
        t.map(0, 40_000_000, None);
        t.begin_segment();
        assert_eq!(t.map(0, 0, None), 80_000_000);
    }

    #[test]
    fn a_clock_jump_is_rebased() {
        let mut t = Timeline::default();
        t.set_track_count(1);
        t.map(0, 1_000_000_000_000, Some(40_000_000));
        let out = t.map(0, 0, Some(40_000_000));
        assert_eq!(out, 40_000_000);
        assert_eq!(t.map(0, 40_000_000, Some(40_000_000)), 80_000_000);
    }
}
