//! Reconnect delays for inputs that come back (HTTP pull, RTSP cameras): exponential from
//! 1 s to 30 s, with jitter so that several streams (or several servers) that lost the same
//! source do not knock on its door in lockstep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The most jitter added to a delay.
const JITTER_MS: u64 = 250;

/// Exponential backoff with jitter, [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        // Different for every Backoff, also within one process (several cameras).
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let seed = nanos
            ^ u64::from(std::process::id()).rotate_left(32)
            ^ instance.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Backoff {
            next: BACKOFF_MIN,
            seed: seed | 1,
        }
    }

    /// The input delivered media: the next failure starts over at the minimum.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The delay before the next attempt; doubles the one after it.
    pub fn delay(&mut self) -> Duration {
        // xorshift: jitter only has to keep reconnecting clients apart.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = Duration::from_millis(self.seed % JITTER_MS);
        let d = self.next + jitter;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let secs: Vec<u64> = (0..8).map(|_| b.delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.delay().as_secs(), 1);
    }

    #[test]
    fn two_backoffs_do_not_share_their_jitter() {
        let mut a = Backoff::new();
        let mut b = Backoff::new();
        let ja: Vec<Duration> = (0..6).map(|_| a.delay()).collect();
        let jb: Vec<Duration> = (0..6).map(|_| b.delay()).collect();
        assert_ne!(ja, jb);
    }
}
