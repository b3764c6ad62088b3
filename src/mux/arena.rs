//! Small buffers carved out of larger blocks: the per-frame and per-part headers a muxer
//! writes (a SimpleBlock with its frame, a `moof`, a `prft`) are each a slice of a shared
//! block instead of an allocation of their own.
//!
//! A reader thread writes them and the event loop frees them; with one allocation per
//! frame, small frames made the two threads fight over the allocator's lock (about a
//! quarter of the time of a remux of 0.2 Mbit/s input, bench/README.md). A block is freed
//! when the last slice of it is dropped; slices are dropped roughly in the order they were
//! written, so a block outlives its last slice by little.

use bytes::{Bytes, BytesMut};

/// Carves [`Bytes`] out of blocks of `block` bytes.
#[derive(Debug)]
pub struct Arena {
    buf: BytesMut,
    block: usize,
}

impl Arena {
    /// Blocks of `block` bytes. A write larger than an eighth of that gets an allocation
    /// of its own, so a block wastes at most that much at its end.
    pub fn new(block: usize) -> Self {
        Arena {
            buf: BytesMut::new(),
            block: block.max(64),
        }
    }

    /// Runs `write`, which appends `len` bytes to the buffer it is given, and returns
    /// them. (Appending more is correct too, but may reallocate.)
    pub fn write(&mut self, len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
        if len > self.block / 8 {
            let mut own = BytesMut::with_capacity(len);
            write(&mut own);
            return own.freeze();
        }
        if self.buf.capacity() < len {
            self.buf = BytesMut::with_capacity(self.block);
        }
        write(&mut self.buf);
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_a_block_and_keep_their_bytes() {
        let mut a = Arena::new(1024);
        let x = a.write(3, |b| b.extend_from_slice(b"abc"));
        let y = a.write(2, |b| b.extend_from_slice(b"de"));
        assert_eq!(&x[..], b"abc");
        assert_eq!(&y[..], b"de");
        // Contiguous in one block.
        assert_eq!(x.as_ptr().wrapping_add(3), y.as_ptr());
        // A large write gets its own buffer; the block goes on after it.
        let big = a.write(600, |b| b.extend_from_slice(&[7; 600]));
        assert_eq!(&big[..], &[7; 600][..]);
        let z = a.write(1, |b| b.extend_from_slice(b"f"));
        assert_eq!(y.as_ptr().wrapping_add(2), z.as_ptr());
        // Writing more than announced still gives the bytes written.
        let w = a.write(1, |b| b.extend_from_slice(&[1; 2000]));
        assert_eq!(&w[..], &[1; 2000][..]);
        // A block that cannot hold a write is replaced.
        for _ in 0..20 {
            let v = a.write(100, |b| b.extend_from_slice(&[9; 100]));
            assert_eq!(&v[..], &[9; 100][..]);
        }
        assert_eq!(
            (&x[..], &y[..], &z[..]),
            (&b"abc"[..], &b"de"[..], &b"f"[..])
        );
    }
}
