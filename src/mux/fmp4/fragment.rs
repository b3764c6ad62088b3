//! CMAF chunks (`moof` + `mdat`) and the small boxes around them (`styp`, `prft`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mp4_atom::{
    Encode, FourCC, Mfhd, Moof, Prft, ReferenceTime, Styp, Tfdt, Tfhd, Traf, Trun, TrunEntry,
    TrunSamples,
};

use super::{Fmp4Error, NON_SYNC_SAMPLE_FLAGS, SYNC_SAMPLE_FLAGS};
use crate::mux::arena::Arena;

/// One sample of one track, in the track's timescale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Decode time.
    pub dts: u64,
    /// Presentation time. `pts − dts` is written as a signed 32-bit composition offset.
    pub pts: u64,
    /// Ticks until the next sample's dts.
    pub duration: u32,
    /// A sync sample (keyframe; every audio frame).
    pub sync: bool,
    /// The sample as stored in `mdat` (length-prefixed NAL units for H.264/H.265).
    pub data: Bytes,
}

/// One CMAF chunk: `moof` + `mdat`, as buffers to write in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The `moof`, the `mdat` header, then every sample's payload (shared, not copied).
    pub buffers: Vec<Bytes>,
    /// Total bytes of `buffers`.
    pub len: u64,
}

impl Chunk {
    /// The chunk as one contiguous buffer (copies; for tests and files).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        for b in &self.buffers {
            out.extend_from_slice(b);
        }
        Bytes::from(out)
    }
}

/// Picks the `tfhd` default for a per-sample value when every sample has the same one, so
/// the `trun` does not repeat it.
fn uniform<T: Copy + PartialEq>(mut values: impl Iterator<Item = T>) -> Option<T> {
    let first = values.next()?;
    values.all(|v| v == first).then_some(first)
}

/// Writes one chunk of `samples` of track `track_id`: `moof` (`mfhd` with
/// `sequence_number`; one `traf` with `tfhd` default-base-is-moof, `tfdt` version 1 = the
/// first sample's dts, `trun` version 1) followed by `mdat`.
///
/// The samples must be contiguous in decode order: each one's dts is the previous dts plus
/// the previous duration ([`Fmp4Error::DtsGap`] otherwise). Values shared by every sample
/// (duration, size, flags) go into `tfhd` defaults; a run whose only odd one out is the first
/// sample's flags (a keyframe followed by non-keyframes) uses `first_sample_flags`.
/// Composition offsets are written only when some sample has pts ≠ dts.
pub fn fragment(
    track_id: u32,
    sequence_number: u32,
    samples: &[Sample],
) -> Result<Chunk, Fmp4Error> {
    let mut head = HeadEncoder::default();
    let mdat_len = head.encode(track_id, sequence_number, samples)?;
    let moof_len = head.buf.len() - mdat_header_len(mdat_len);
    let len = head.buf.len() as u64 + mdat_len;
    let head = Bytes::from(head.buf);
    let mut buffers = Vec::with_capacity(2 + samples.len());
    buffers.push(head.slice(..moof_len));
    buffers.push(head.slice(moof_len..));
    buffers.extend(samples.iter().map(|s| s.data.clone()));
    Ok(Chunk { buffers, len })
}

/// Encodes a chunk's `moof` and `mdat` header, keeping its buffers from one chunk to the
/// next (a chunk of small frames otherwise costs a dozen allocations).
#[derive(Clone, Debug, Default)]
struct HeadEncoder {
    moof: Moof,
    /// The last chunk's `moof` followed by its `mdat` header.
    buf: Vec<u8>,
}

impl HeadEncoder {
    /// Writes the `moof` and `mdat` header of a chunk of `samples` into `self.buf`
    /// (see [`fragment`]); returns the `mdat` payload length.
    fn encode(
        &mut self,
        track_id: u32,
        sequence_number: u32,
        samples: &[Sample],
    ) -> Result<u64, Fmp4Error> {
        let first = samples.first().ok_or(Fmp4Error::NoSamples)?;

        let mut expected = first.dts;
        let mut mdat_len: u64 = 0;
        for (index, s) in samples.iter().enumerate() {
            if s.dts != expected {
                return Err(Fmp4Error::DtsGap {
                    index,
                    dts: s.dts,
                    expected,
                });
            }
            expected = s.dts.saturating_add(u64::from(s.duration));
            let offset = i128::from(s.pts) - i128::from(s.dts);
            if i32::try_from(offset).is_err() {
                return Err(Fmp4Error::CompositionOffset { index, offset });
            }
            if u32::try_from(s.data.len()).is_err() {
                return Err(Fmp4Error::SampleTooLarge {
                    index,
                    size: s.data.len(),
                });
            }
            mdat_len += s.data.len() as u64;
        }

        let flags = |s: &Sample| {
            if s.sync {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            }
        };
        let default_duration = uniform(samples.iter().map(|s| s.duration));
        let default_size = uniform(samples.iter().map(|s| s.data.len() as u32));
        let default_flags = uniform(samples.iter().map(flags));
        // A keyframe followed by non-keyframes: the common case of a part that opens a GOP.
        let first_flags = match default_flags {
            None if samples.len() > 1 => uniform(samples[1..].iter().map(flags)),
            _ => None,
        };
        let with_cts = samples.iter().any(|s| s.pts != s.dts);

        self.moof.mfhd = Mfhd { sequence_number };
        if self.moof.traf.len() != 1 {
            self.moof.traf = vec![Traf::default()];
        }
        let traf = &mut self.moof.traf[0];
        traf.tfhd = Tfhd {
            track_id,
            default_sample_duration: default_duration,
            default_sample_size: default_size,
            default_sample_flags: default_flags.or(first_flags),
            default_base_is_moof: true,
            ..Default::default()
        };
        traf.tfdt = Some(Tfdt {
            base_media_decode_time: first.dts,
        });
        if traf.trun.len() != 1 {
            traf.trun = vec![Trun::default()];
        }
        let trun = &mut traf.trun[0];
        trun.data_offset = Some(0);
        if !matches!(trun.samples, TrunSamples::Explicit(_)) {
            trun.samples = TrunSamples::Explicit(Vec::new());
        }
        if let TrunSamples::Explicit(entries) = &mut trun.samples {
            entries.clear();
            entries.extend(samples.iter().enumerate().map(|(i, s)| TrunEntry {
                duration: default_duration.is_none().then_some(s.duration),
                size: default_size.is_none().then_some(s.data.len() as u32),
                flags: match (default_flags, first_flags) {
                    (Some(_), _) => None,
                    (None, Some(_)) => (i == 0).then(|| flags(s)),
                    (None, None) => Some(flags(s)),
                },
                // Range-checked above.
                cts: with_cts.then(|| (i128::from(s.pts) - i128::from(s.dts)) as i64),
            }));
        }

        // The data offset counts from the start of the moof to the first payload byte;
        // the moof's size does not depend on the offset's value, so encode, then write
        // the offset into its field.
        self.buf.clear();
        self.moof.encode(&mut self.buf)?;
        let data_offset =
            i32::try_from(self.buf.len() + mdat_header_len(mdat_len)).map_err(|_| {
                Fmp4Error::SampleTooLarge {
                    index: 0,
                    size: self.buf.len(),
                }
            })?;
        self.moof.traf[0].trun[0].data_offset = Some(data_offset);
        match trun_data_offset_at(&self.buf) {
            Some(at) => self.buf[at..at + 4].copy_from_slice(&data_offset.to_be_bytes()),
            None => {
                self.buf.clear();
                self.moof.encode(&mut self.buf)?;
            }
        }
        put_mdat_header(&mut self.buf, mdat_len);
        Ok(mdat_len)
    }
}

/// Where the `data_offset` field of the first `trun` of the first `traf` is in an encoded
/// `moof` (None if the boxes are not as [`HeadEncoder`] writes them).
fn trun_data_offset_at(moof: &[u8]) -> Option<usize> {
    /// The size and type of the box at `at`.
    fn header(b: &[u8], at: usize) -> Option<(usize, &[u8])> {
        let size = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        (size >= 8 && at + size <= b.len()).then(|| (size, &b[at + 4..at + 8]))
    }
    let (len, kind) = header(moof, 0)?;
    if kind != b"moof" || len != moof.len() {
        return None;
    }
    let mut at = 8;
    while at < moof.len() {
        let (size, kind) = header(moof, at)?;
        if kind == b"traf" {
            let end = at + size;
            let mut child = at + 8;
            while child < end {
                let (size, kind) = header(moof, child)?;
                if kind == b"trun" {
                    // Version and flags, sample_count, then data_offset (flag 0x000001).
                    let flags = moof.get(child + 9..child + 12)?;
                    return (size >= 20 && flags[2] & 1 == 1).then_some(child + 16);
                }
                child += size;
            }
            return None;
        }
        at += size;
    }
    None
}

/// The length of the `mdat` box header for `payload` bytes.
fn mdat_header_len(payload: u64) -> usize {
    if u32::try_from(payload + 8).is_ok() {
        8
    } else {
        16
    }
}

/// The `mdat` box header for `payload` bytes: 8 bytes, or 16 (64-bit `largesize`) past 4 GiB.
fn put_mdat_header(h: &mut Vec<u8>, payload: u64) {
    match u32::try_from(payload + 8) {
        Ok(size) => {
            h.extend_from_slice(&size.to_be_bytes());
            h.extend_from_slice(b"mdat");
        }
        Err(_) => {
            h.extend_from_slice(&1u32.to_be_bytes());
            h.extend_from_slice(b"mdat");
            h.extend_from_slice(&(payload + 16).to_be_bytes());
        }
    }
}

/// The `mdat` box header for `payload` bytes: 8 bytes, or 16 (64-bit `largesize`) past 4 GiB.
#[cfg(test)]
pub(super) fn mdat_header(payload: u64) -> Bytes {
    let mut h = Vec::with_capacity(16);
    put_mdat_header(&mut h, payload);
    Bytes::from(h)
}

/// Numbers chunks for one track: `mfhd` sequence numbers start at 1 and increase by one per
/// chunk, as ISO/IEC 14496-12 §8.8.5 asks.
#[derive(Clone, Debug)]
pub struct FragmentWriter {
    track_id: u32,
    next_sequence: u32,
    next_dts: Option<u64>,
    head: HeadEncoder,
}

impl FragmentWriter {
    pub fn new(track_id: u32) -> Self {
        FragmentWriter {
            track_id,
            next_sequence: 1,
            next_dts: None,
            head: HeadEncoder::default(),
        }
    }

    /// The sequence number the next chunk will carry.
    pub fn next_sequence(&self) -> u32 {
        self.next_sequence
    }

    /// Where the last chunk ended (its last dts + duration): the next chunk's `tfdt` for a
    /// gapless track.
    pub fn next_dts(&self) -> Option<u64> {
        self.next_dts
    }

    /// Writes the next chunk. The sequence number advances only when it succeeds.
    pub fn write(&mut self, samples: &[Sample]) -> Result<Chunk, Fmp4Error> {
        let chunk = fragment(self.track_id, self.next_sequence, samples)?;
        self.advance(samples);
        Ok(chunk)
    }

    /// Writes the next chunk as [`FragmentWriter::write`] does, but with its `moof` and
    /// `mdat` header in one buffer cut from `arena`. The chunk's buffers have room for
    /// `spare` more without reallocating (a `prft` or `styp` in front).
    pub fn write_in(
        &mut self,
        samples: &[Sample],
        arena: &mut Arena,
        spare: usize,
    ) -> Result<Chunk, Fmp4Error> {
        let mdat_len = self
            .head
            .encode(self.track_id, self.next_sequence, samples)?;
        let encoded = &self.head.buf;
        let head = arena.write(encoded.len(), |b| b.extend_from_slice(encoded));
        let len = head.len() as u64 + mdat_len;
        let mut buffers = Vec::with_capacity(1 + samples.len() + spare);
        buffers.push(head);
        buffers.extend(samples.iter().map(|s| s.data.clone()));
        self.advance(samples);
        Ok(Chunk { buffers, len })
    }

    fn advance(&mut self, samples: &[Sample]) {
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        self.next_dts = samples
            .last()
            .map(|s| s.dts.saturating_add(u64::from(s.duration)));
    }
}

/// `styp` brands for a segment start.
///
/// - `msdh` (major): a DASH media segment (ISO/IEC 23009-1 §6.3.4.2), which each CMAF
///   segment also is; ffmpeg, GPAC and shaka-packager write the same major brand.
/// - `cmfs`: a CMAF segment (ISO/IEC 23000-19 §7.3.3): one or more CMAF fragments of one
///   track, the first starting with a sync sample.
///
/// Not `msix` (that promises a `sidx`, which live segments do not carry) nor `cmfl` (a
/// chunk's brand; the chunks after the first need no `styp` at all).
const STYP_BRANDS: [&[u8; 4]; 2] = [b"msdh", b"cmfs"];

/// A `styp` box to put in front of the first chunk of a segment.
pub fn styp() -> Bytes {
    let mut out = Vec::with_capacity(24);
    put_styp(&mut out);
    Bytes::from(out)
}

/// Appends a [`styp`] box to `out`.
pub fn put_styp(out: &mut Vec<u8>) {
    let styp = Styp {
        major_brand: FourCC::new(STYP_BRANDS[0]),
        minor_version: 0,
        compatible_brands: STYP_BRANDS.iter().map(|b| FourCC::new(b)).collect(),
    };
    // A fixed-size box of fixed fields cannot fail to encode.
    let _ = styp.encode(out);
}

/// What the wall-clock time of a `prft` box means (ISO/IEC 14496-12 §8.16.5).
pub type PrftSemantics = ReferenceTime;

/// A `prft` (ProducerReferenceTimeBox) tying `media_time` (a presentation time in the
/// track's timescale) to the wall clock `ntp` ([`ntp_timestamp`]). Put it in front of the
/// `moof` it describes; LL-DASH players use it to measure their latency.
///
/// For a relay, [`ReferenceTime::Input`] with the arrival time of the frame whose pts is
/// `media_time` is the honest choice.
pub fn prft(track_id: u32, ntp: u64, media_time: u64, semantics: PrftSemantics) -> Bytes {
    let mut out = Vec::with_capacity(32);
    put_prft(&mut out, track_id, ntp, media_time, semantics);
    Bytes::from(out)
}

/// Appends a [`prft`] box to `out`.
pub fn put_prft(
    out: &mut Vec<u8>,
    track_id: u32,
    ntp: u64,
    media_time: u64,
    semantics: PrftSemantics,
) {
    let prft = Prft {
        reference_track_id: track_id,
        ntp_timestamp: ntp,
        media_time,
        utc_time_semantics: semantics,
    };
    // Fixed fields; mp4-atom picks version 0 or 1 by the size of media_time.
    let _ = prft.encode(out);
}

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A wall-clock time as a 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, the
/// binary fraction of a second in the low 32 (rounded down). Times before 1970 give 1970.
pub fn ntp_timestamp(time: SystemTime) -> u64 {
    let since_unix = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset is written into the field found in place, and the result is what a
    /// second encode with the offset set gives.
    #[test]
    fn the_data_offset_is_patched_in_place() {
        let sample = |dts: u64, sync: bool, len: usize| Sample {
            dts,
            pts: dts + if sync { 0 } else { 3000 },
            duration: 3000,
            sync,
            data: Bytes::from(vec![1; len]),
        };
        for samples in [
            vec![sample(0, true, 10)],
            vec![
                sample(0, true, 10),
                sample(3000, false, 20),
                sample(6000, false, 5),
            ],
        ] {
            let mut head = HeadEncoder::default();
            let mdat_len = head.encode(1, 7, &samples).unwrap();
            let moof_len = head.buf.len() - mdat_header_len(mdat_len);
            let at = trun_data_offset_at(&head.buf[..moof_len]).expect("trun found");
            let offset = i32::from_be_bytes(head.buf[at..at + 4].try_into().unwrap());
            assert_eq!(offset as usize, head.buf.len());
            let mut again = Vec::new();
            head.moof.encode(&mut again).unwrap();
            assert_eq!(&again[..], &head.buf[..moof_len]);
        }
    }
}
