//! A finished CMAF segment in one sealed, read-only memory file (Linux `memfd`), mapped
//! into the process: the mapping is the segment's only copy (a [`Bytes`] for parts and
//! byte slices), and the file lets the event loop `sendfile` whole segments and ranges
//! to viewers without copying them through user space. Under `wrk` the user→kernel copy
//! of `writev` was 39 % of the loop's time for segment requests (bench/README.md).
//!
//! Nothing touches a disk: a memfd lives in RAM like any other allocation.

use std::sync::Arc;

use bytes::Bytes;

/// A sealed memfd holding one segment, and its read-only mapping.
pub struct SegmentFile {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    #[cfg(target_os = "linux")]
    map: *const u8,
    len: usize,
}

// The mapping is read-only and the file sealed against writes, resizing and shrinking:
// the bytes behind `map` never change while this value lives, so sharing it is sound.
unsafe impl Send for SegmentFile {}
unsafe impl Sync for SegmentFile {}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("len", &self.len)
            .finish()
    }
}

impl SegmentFile {
    /// Writes `buffers` (in order) into a new sealed memory file. `None` when the system
    /// refuses (no memfd, out of file descriptors, empty segment): the caller then keeps
    /// the segment on the heap, served by `writev` as before.
    #[cfg(target_os = "linux")]
    pub fn seal(buffers: &[&Bytes]) -> Option<Arc<SegmentFile>> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

        let len: usize = buffers.iter().map(|b| b.len()).sum();
        if len == 0 {
            return None;
        }
        // SAFETY: a constant NUL-terminated name; the returned descriptor is checked and
        // owned at once.
        let raw = unsafe {
            libc::memfd_create(
                c"muxcast-segment".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = std::fs::File::from(fd);
        write_all_vectored(&mut file, buffers).ok()?;
        let fd = OwnedFd::from(file);
        // From here on the contents cannot change (the Bytes handed out rely on it).
        // Sealed before mapping: a shared mapping of a writable descriptor would make
        // F_SEAL_WRITE fail with EBUSY.
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return None;
        }
        // SAFETY: maps `len` bytes of a file that is exactly `len` long, read-only and
        // shared; the result is checked against MAP_FAILED.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        Some(Arc::new(SegmentFile {
            fd,
            map: map.cast::<u8>().cast_const(),
            len,
        }))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn seal(_buffers: &[&Bytes]) -> Option<Arc<SegmentFile>> {
        None
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment's bytes as a shared buffer over the mapping (no copy).
    pub fn bytes(self: &Arc<Self>) -> Bytes {
        Bytes::from_owner(Mapped(Arc::clone(self)))
    }

    /// The descriptor to `sendfile` from.
    #[cfg(target_os = "linux")]
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }
}

impl AsRef<[u8]> for SegmentFile {
    fn as_ref(&self) -> &[u8] {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: `map` points at `len` readable bytes that live, unchanged (sealed),
            // until `self` is dropped.
            unsafe { std::slice::from_raw_parts(self.map, self.len) }
        }
        #[cfg(not(target_os = "linux"))]
        {
            &[]
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for SegmentFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `seal`; no slice of it outlives
        // `self` (every Bytes over it holds an Arc to `self`).
        unsafe {
            libc::munmap(self.map.cast_mut().cast(), self.len);
        }
    }
}

/// Writes every buffer, in order, with as few `writev`s as the kernel allows (a segment
/// of small frames is ~100 buffers: one `write` each was most of the cost of sealing).
#[cfg(target_os = "linux")]
fn write_all_vectored(file: &mut std::fs::File, buffers: &[&Bytes]) -> std::io::Result<()> {
    use std::io::{ErrorKind, IoSlice, Write};
    /// At most this many buffers per call (Linux's IOV_MAX is 1024).
    const BATCH: usize = 1024;
    for group in buffers.chunks(BATCH) {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(group.len());
        slices.extend(
            group
                .iter()
                .filter(|b| !b.is_empty())
                .map(|b| IoSlice::new(b)),
        );
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Keeps the file (and its mapping) alive while a `Bytes` over it exists.
struct Mapped(Arc<SegmentFile>);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_segment_holds_its_buffers_in_order_and_refuses_writes() {
        let a = Bytes::from_static(b"moof....");
        let b = Bytes::from(vec![7u8; 5000]);
        let file = SegmentFile::seal(&[&a, &b]).expect("memfd");
        let bytes = file.bytes();
        assert_eq!(bytes.len(), 5008);
        assert_eq!(&bytes[..8], b"moof....");
        assert!(bytes[8..].iter().all(|&x| x == 7));
        // Slices outlive the Arc they came from.
        let tail = bytes.slice(5000..);
        drop(bytes);
        drop(file);
        assert_eq!(&tail[..], &[7u8; 8]);

        use std::io::Write;
        use std::os::fd::BorrowedFd;
        let file = SegmentFile::seal(&[&a]).unwrap();
        // SAFETY: borrowed for the duration of this test only, while `file` lives.
        let fd = unsafe { BorrowedFd::borrow_raw(file.raw_fd()) };
        let mut writer = std::fs::File::from(fd.try_clone_to_owned().unwrap());
        assert!(writer.write_all(b"x").is_err(), "sealed against writes");
        assert_eq!(&file.bytes()[..], b"moof....");
    }

    #[test]
    fn more_buffers_than_one_writev_takes_are_all_written_in_order() {
        let buffers: Vec<Bytes> = (0..3000u32)
            .map(|i| Bytes::from(vec![i as u8; (i % 7) as usize]))
            .collect();
        let refs: Vec<&Bytes> = buffers.iter().collect();
        let file = SegmentFile::seal(&refs).expect("memfd");
        let want: Vec<u8> = buffers.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(&file.bytes()[..], &want[..]);
    }

    #[test]
    fn nothing_to_seal_is_none() {
        assert!(SegmentFile::seal(&[]).is_none());
    }
}
