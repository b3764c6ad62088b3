//! CMAF chunks (`moof` + `mdat`) and the small boxes around them (`styp`, `prft`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mp4_atom::{
    Encode, FourCC, Mfhd, Moof, Prft, ReferenceTime, Styp, Tfdt, Tfhd, Traf, Trun, TrunEntry,
};

use super::{Fmp4Error, NON_SYNC_SAMPLE_FLAGS, SYNC_SAMPLE_FLAGS};

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

    let entries: Vec<TrunEntry> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| TrunEntry {
            duration: default_duration.is_none().then_some(s.duration),
            size: default_size.is_none().then_some(s.data.len() as u32),
            flags: match (default_flags, first_flags) {
                (Some(_), _) => None,
                (None, Some(_)) => (i == 0).then(|| flags(s)),
                (None, None) => Some(flags(s)),
            },
            // Range-checked above.
            cts: with_cts.then(|| (i128::from(s.pts) - i128::from(s.dts)) as i64),
        })
        .collect();

    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id,
                default_sample_duration: default_duration,
                default_sample_size: default_size,
                default_sample_flags: default_flags.or(first_flags),
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: first.dts,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: entries.into(),
            }],
            ..Default::default()
        }],
    };

    // The data offset counts from the start of the moof to the first payload byte; the
    // moof's size does not depend on the offset's value, so encode, then encode again.
    let mut buf = Vec::with_capacity(128 + 16 * samples.len());
    moof.encode(&mut buf)?;
    let mdat_header = mdat_header(mdat_len);
    let data_offset =
        i32::try_from(buf.len() + mdat_header.len()).map_err(|_| Fmp4Error::SampleTooLarge {
            index: 0,
            size: buf.len(),
        })?;
    moof.traf[0].trun[0].data_offset = Some(data_offset);
    buf.clear();
    moof.encode(&mut buf)?;

    let mut buffers = Vec::with_capacity(2 + samples.len());
    let len = buf.len() as u64 + mdat_header.len() as u64 + mdat_len;
    buffers.push(Bytes::from(buf));
    buffers.push(mdat_header);
    buffers.extend(samples.iter().map(|s| s.data.clone()));
    Ok(Chunk { buffers, len })
}

/// The `mdat` box header for `payload` bytes: 8 bytes, or 16 (64-bit `largesize`) past 4 GiB.
pub(super) fn mdat_header(payload: u64) -> Bytes {
    let mut h = Vec::with_capacity(16);
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
    Bytes::from(h)
}

/// Numbers chunks for one track: `mfhd` sequence numbers start at 1 and increase by one per
/// chunk, as ISO/IEC 14496-12 §8.8.5 asks.
#[derive(Clone, Debug)]
pub struct FragmentWriter {
    track_id: u32,
    next_sequence: u32,
    next_dts: Option<u64>,
}

impl FragmentWriter {
    pub fn new(track_id: u32) -> Self {
        FragmentWriter {
            track_id,
            next_sequence: 1,
            next_dts: None,
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
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        self.next_dts = samples
            .last()
            .map(|s| s.dts.saturating_add(u64::from(s.duration)));
        Ok(chunk)
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
    let styp = Styp {
        major_brand: FourCC::new(STYP_BRANDS[0]),
        minor_version: 0,
        compatible_brands: STYP_BRANDS.iter().map(|b| FourCC::new(b)).collect(),
    };
    let mut out = Vec::with_capacity(24);
    // A fixed-size box of fixed fields cannot fail to encode.
    let _ = styp.encode(&mut out);
    Bytes::from(out)
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
    let prft = Prft {
        reference_track_id: track_id,
        ntp_timestamp: ntp,
        media_time,
        utc_time_semantics: semantics,
    };
    let mut out = Vec::with_capacity(32);
    // Fixed fields; mp4-atom picks version 0 or 1 by the size of media_time.
    let _ = prft.encode(&mut out);
    Bytes::from(out)
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
