//! The event loop's side of a stream: the live-MKV log of GOPs, read by client cursors.
//!
//! The log is a window of GOPs, each a growing list of refcounted chunks (one frame each).
//! A client holds a cursor: the GOP it is in (an `Rc`, so a GOP the window dropped stays
//! alive while someone is still sending it) and a position inside it. A client that
//! finishes a GOP moves to the next one if the window still holds it; otherwise it has
//! fallen too far behind and jumps to the newest GOP, skipping whole GOPs. The reader
//! never waits, a client never waits for another, and no GOP is ever torn.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use super::Headers;

/// One GOP: starts at a keyframe cluster; grows until the next GOP starts.
#[derive(Debug)]
pub struct Gop {
    pub seq: u64,
    /// Which track set (header) this GOP belongs to.
    pub generation: u64,
    pub start_pts_ns: i64,
    /// The header a viewer starting at this GOP needs.
    pub headers: Headers,
    chunks: RefCell<Vec<Bytes>>,
    bytes: Cell<usize>,
    closed: Cell<bool>,
}

impl Gop {
    pub fn len(&self) -> usize {
        self.chunks.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Calls `f` with the chunks from `from` on, for building a writev list without
    /// cloning each `Bytes`.
    pub fn with_chunks<R>(&self, from: usize, f: impl FnOnce(&[Bytes]) -> R) -> R {
        let chunks = self.chunks.borrow();
        f(chunks.get(from..).unwrap_or(&[]))
    }
}

/// Window limits.
#[derive(Clone, Debug)]
pub struct WindowOptions {
    /// History a new client may get at once (`--burst`).
    pub burst_ns: i64,
    /// How far behind the head (bytes, beyond the burst) a client may be before it skips.
    pub client_queue_bytes: usize,
}

/// What the next GOP for a client is after it finished one.
#[derive(Debug)]
pub enum Next {
    Gop {
        gop: Rc<Gop>,
        skipped: u64,
    },
    /// The client's GOP is the newest one and is not closed: wait for more.
    Wait,
    /// The stream ended, or moved to a new header: end this client's response.
    End,
}

/// The most one GOP may hold. The window drops whole GOPs, so a GOP that never ends (an
/// input that stops sending keyframes, or never sends one the parser recognises) would
/// grow without bound: its frames past this are dropped until the next keyframe (64 MiB
/// is 26 s at 20 Mbit/s).
pub const MAX_GOP_BYTES: usize = 64 << 20;

/// The live-MKV log of one stream.
#[derive(Debug)]
pub struct LiveLog {
    pub headers: Option<Headers>,
    pub generation: u64,
    gops: VecDeque<Rc<Gop>>,
    next_seq: u64,
    window_bytes: usize,
    options: WindowOptions,
    pub ended: bool,
    /// Bytes dropped because a GOP reached [`MAX_GOP_BYTES`].
    pub oversize_dropped: u64,
    max_gop_bytes: usize,
}

impl LiveLog {
    pub fn new(options: WindowOptions) -> Self {
        LiveLog {
            headers: None,
            generation: 0,
            gops: VecDeque::new(),
            next_seq: 0,
            window_bytes: 0,
            options,
            ended: false,
            oversize_dropped: 0,
            max_gop_bytes: MAX_GOP_BYTES,
        }
    }

    pub fn gops_held(&self) -> usize {
        self.gops.len()
    }

    pub fn window_bytes(&self) -> usize {
        self.window_bytes
    }

    fn close_newest(&mut self) {
        if let Some(g) = self.gops.back() {
            g.closed.set(true);
        }
    }

    pub fn set_headers(&mut self, headers: Headers) {
        self.close_newest();
        self.generation += 1;
        self.headers = Some(headers);
    }

    pub fn end(&mut self) {
        self.close_newest();
        self.ended = true;
    }

    /// Drops every GOP (an on-demand input disconnected): new viewers wait for the
    /// next one. Viewers still in a GOP finish it and wait too.
    pub fn forget_gops(&mut self) {
        self.close_newest();
        self.gops.clear();
        self.window_bytes = 0;
    }

    /// Appends one chunk; `starts_gop` opens a new GOP (and closes the previous one).
    pub fn push(&mut self, bytes: Bytes, starts_gop: bool, pts_ns: i64) {
        if starts_gop || self.gops.back().is_none_or(|g| g.is_closed()) {
            if !starts_gop {
                // A chunk that cannot start a GOP has nothing to attach to: the publisher
                // never sends one, so this only guards against a broken invariant.
                return;
            }
            let Some(headers) = self.headers.clone() else {
                // Chunks before any header have no track list to be read against.
                return;
            };
            self.close_newest();
            // Room for as many chunks as the last GOP had, and a little more: a GOP of
            // small frames is hundreds of chunks, grown one reallocation at a time else.
            let last = self.gops.back().map_or(0, |g| g.len());
            self.gops.push_back(Rc::new(Gop {
                seq: self.next_seq,
                generation: self.generation,
                start_pts_ns: pts_ns,
                headers,
                chunks: RefCell::new(Vec::with_capacity((last + last / 4).max(64))),
                bytes: Cell::new(0),
                closed: Cell::new(false),
            }));
            self.next_seq += 1;
            self.trim();
        }
        let Some(gop) = self.gops.back() else { return };
        if gop.bytes.get() + bytes.len() > self.max_gop_bytes {
            if self.oversize_dropped == 0 {
                log::warn!(
                    "a GOP reached {} MiB without a keyframe: dropping frames until the next one",
                    self.max_gop_bytes >> 20
                );
            }
            self.oversize_dropped += bytes.len() as u64;
            return;
        }
        gop.bytes.set(gop.bytes.get() + bytes.len());
        self.window_bytes += bytes.len();
        gop.chunks.borrow_mut().push(bytes);
    }

    fn burst_bytes(&self) -> usize {
        let Some(newest) = self.gops.back() else {
            return 0;
        };
        let from = newest.start_pts_ns.saturating_sub(self.options.burst_ns);
        self.gops
            .iter()
            .filter(|g| g.start_pts_ns >= from)
            .map(|g| g.bytes())
            .sum()
    }

    /// Drops the oldest GOPs beyond burst + client queue. Two GOPs always stay, so a
    /// client finishing the previous GOP always finds the current one.
    fn trim(&mut self) {
        let limit = self.options.client_queue_bytes + self.burst_bytes();
        while self.gops.len() > 2 {
            let oldest = self.gops.front().map_or(0, |g| g.bytes());
            if self.window_bytes.saturating_sub(oldest) < limit {
                break;
            }
            self.gops.pop_front();
            self.window_bytes -= oldest;
        }
    }

    fn current_gops(&self) -> impl DoubleEndedIterator<Item = &Rc<Gop>> {
        self.gops
            .iter()
            .filter(move |g| g.generation == self.generation)
    }

    /// Where a new client starts: the oldest GOP within `--burst` of the newest, or the
    /// newest GOP (its keyframe) when there is no burst. None until a GOP exists.
    pub fn start_gop(&self) -> Option<Rc<Gop>> {
        let newest = self.current_gops().next_back()?;
        let from = newest.start_pts_ns.saturating_sub(self.options.burst_ns);
        self.current_gops()
            .find(|g| g.start_pts_ns >= from)
            .cloned()
    }

    /// The sequence number the next GOP will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// For a viewer that arrived before there was anything to watch: the first GOP
    /// published since (`seq` = [`Self::next_seq`] when it arrived), if the window still
    /// holds it, else the oldest one held. Whatever the header it belongs to.
    pub fn first_gop_from(&self, seq: u64) -> Option<Rc<Gop>> {
        self.gops.iter().find(|g| g.seq >= seq).cloned()
    }

    /// Where a client that finished `gop` goes next. A client stays with the header it
    /// started with: it follows the GOPs of that header and ends where they end.
    pub fn next_after(&self, gop: &Gop) -> Next {
        if !gop.is_closed() {
            return Next::Wait;
        }
        let (Some(oldest), Some(newest)) = (self.gops.front(), self.gops.back()) else {
            // Nothing held (see `forget_gops`): wait for the next GOP of this header.
            return if gop.generation != self.generation || self.ended {
                Next::End
            } else {
                Next::Wait
            };
        };
        let want = gop.seq + 1;
        let (next, skipped) = if want > newest.seq {
            // Nothing after it yet. More of the same header may still come, unless the
            // header has changed or the stream is over.
            return if gop.generation != self.generation || self.ended {
                Next::End
            } else {
                Next::Wait
            };
        } else if want >= oldest.seq {
            match self.gops.get((want - oldest.seq) as usize) {
                Some(g) => (g.clone(), 0),
                None => return Next::Wait,
            }
        } else {
            // Fell out of the window: skip to the newest GOP.
            (newest.clone(), newest.seq - want)
        };
        if next.generation != gop.generation {
            return Next::End;
        }
        Next::Gop { gop: next, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn log(burst_ns: i64, queue: usize) -> LiveLog {
        let mut l = LiveLog::new(WindowOptions {
            burst_ns,
            client_queue_bytes: queue,
        });
        l.set_headers(Headers {
            tracks: Arc::new(vec![]),
            mkv: Bytes::from_static(b"h"),
            webm: None,
        });
        l
    }

    fn chunk(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn a_gop_that_never_ends_stops_growing_at_the_cap() {
        let mut l = log(0, 1 << 20);
        l.max_gop_bytes = 1000;
        l.push(chunk(100), true, 0);
        for i in 1..100 {
            l.push(chunk(100), false, i);
        }
        assert_eq!(l.window_bytes(), 1000);
        assert_eq!(l.oversize_dropped, 9000);
        // The next keyframe starts a GOP as usual.
        l.push(chunk(100), true, 200);
        assert_eq!(l.gops_held(), 2);
        assert_eq!(l.window_bytes(), 1100);
    }

    #[test]
    fn new_client_starts_at_newest_keyframe_or_burst() {
        let mut l = log(0, 1 << 20);
        assert!(l.start_gop().is_none());
        for i in 0..5 {
            l.push(chunk(10), true, i * 1_000_000_000);
            l.push(chunk(10), false, i * 1_000_000_000 + 500);
        }
        assert_eq!(l.start_gop().unwrap().seq, 4);
        l.options.burst_ns = 2_000_000_000;
        assert_eq!(l.start_gop().unwrap().seq, 2);
    }

    #[test]
    fn a_slow_client_skips_whole_gops_once_its_next_gop_left_the_window() {
        let mut l = log(0, 100);
        l.push(chunk(60), true, 0);
        let first = l.start_gop().unwrap();
        for i in 1..10 {
            l.push(chunk(60), true, i);
        }
        assert!(l.gops_held() < 10, "window is bounded");
        match l.next_after(&first) {
            Next::Gop { gop, skipped } => {
                assert_eq!(gop.seq, 9);
                assert_eq!(skipped, 8);
            }
            other => panic!("expected a jump, got {other:?}"),
        }
        // The first GOP is still complete for whoever holds it.
        assert_eq!(first.bytes(), 60);
    }

    #[test]
    fn a_keeping_up_client_gets_every_gop_in_order() {
        let mut l = log(0, 1000);
        l.push(chunk(10), true, 0);
        let g0 = l.start_gop().unwrap();
        assert!(matches!(l.next_after(&g0), Next::Wait));
        l.push(chunk(10), true, 1);
        match l.next_after(&g0) {
            Next::Gop { gop, skipped: 0 } => assert_eq!(gop.seq, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_early_viewer_starts_at_the_first_gop_even_after_a_header_change() {
        let mut l = log(0, 1 << 20);
        let joined = l.next_seq();
        l.push(chunk(10), true, 0);
        l.push(chunk(10), true, 1);
        l.set_headers(Headers {
            tracks: Arc::new(vec![]),
            mkv: Bytes::from_static(b"h2"),
            webm: None,
        });
        l.push(chunk(10), true, 2);
        let g = l.first_gop_from(joined).unwrap();
        assert_eq!(g.seq, 0);
        assert_eq!(&g.headers.mkv[..], b"h");
        assert_eq!(
            l.start_gop().unwrap().seq,
            2,
            "a viewer arriving now starts at the newest"
        );
    }

    #[test]
    fn new_headers_end_old_readers_and_stream_end_ends_all() {
        let mut l = log(0, 1000);
        l.push(chunk(10), true, 0);
        let g0 = l.start_gop().unwrap();
        l.set_headers(Headers {
            tracks: Arc::new(vec![]),
            mkv: Bytes::from_static(b"h2"),
            webm: None,
        });
        assert!(matches!(l.next_after(&g0), Next::End));
        assert!(l.start_gop().is_none(), "no GOP of the new header yet");
        // A viewer of the old header that is behind still gets the rest of its GOPs.
        let mut l2 = log(0, 1000);
        l2.push(chunk(10), true, 0);
        let a = l2.start_gop().unwrap();
        l2.push(chunk(10), true, 1);
        l2.set_headers(Headers {
            tracks: Arc::new(vec![]),
            mkv: Bytes::from_static(b"h2"),
            webm: None,
        });
        l2.push(chunk(10), true, 2);
        let Next::Gop { gop: b, .. } = l2.next_after(&a) else {
            panic!("the second GOP of the first header");
        };
        assert_eq!(b.seq, 1);
        assert!(matches!(l2.next_after(&b), Next::End));
        l.push(chunk(10), true, 1);
        let g1 = l.start_gop().unwrap();
        l.end();
        assert!(matches!(l.next_after(&g1), Next::End));
    }
}
