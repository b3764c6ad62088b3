//! The CMAF writer: fragmented-MP4 boxes for one track at a time.
//!
//! This module knows *how* to write the boxes, not *when*: the segmenter decides where parts
//! and segments start and calls it. Everything here is a plain function of its arguments (or
//! a small struct fed one frame at a time), so it is tested byte for byte without a server.
//!
//! - [`init_segment`]: `ftyp` + `moov` for one track (a CMAF header). Video and audio are
//!   separate CMAF tracks, so the same bytes serve an HLS rendition and a DASH
//!   Representation.
//! - [`fragment`] / [`FragmentWriter`]: one CMAF chunk, `moof` + `mdat`, returned as a list
//!   of buffers (the `moof`, the 8-byte `mdat` header, then the sample payloads themselves)
//!   so a socket can `writev` them without copying a payload.
//! - [`styp`] and [`prft`]: the small boxes a segment start and LL-DASH latency measurement
//!   put in front of a chunk.
//! - [`timing`]: nanoseconds → track ticks, DTS reconstruction for B-frame streams (Matroska
//!   and RTP carry presentation times only), and audio durations.
//!
//! # Timelines
//!
//! Every time here is in integer ticks of the track timescale (video 90 kHz, audio the sample
//! rate); nothing goes through floating point. Decode times are never negative
//! (`tfdt` version 1 is unsigned) and composition offsets are signed (`trun` version 1), but
//! [`timing::DtsReorder`] keeps them non-negative: DTS ≤ PTS for every sample.
//!
//! # Boxes
//!
//! The boxes are built and encoded with `mp4-atom` (its decoder also reads them back in the
//! tests); sample entries take the Matroska CodecPrivate where it already is an MP4 record
//! (avcC, hvcC, av1C, AudioSpecificConfig) and plain parameters otherwise (dOps, vpcC,
//! dfLa, frame size, sample rate).

mod fragment;
mod from_codec;
mod init;
pub mod timing;

#[cfg(test)]
mod tests;

pub use fragment::{
    Chunk, FragmentWriter, PrftSemantics, Sample, fragment, ntp_timestamp, prft, put_prft,
    put_styp, styp,
};
pub use from_codec::track_config;
pub use init::{
    AudioParams, FlacParams, OpusMapping, OpusParams, SampleEntry, TrackConfig, VideoParams,
    Vp9Params, init_segment,
};

/// Sample flags for a sync sample (ISO/IEC 14496-12 §8.8.3.1): `sample_depends_on` = 2
/// (depends on no other sample), `sample_is_non_sync_sample` = 0.
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;

/// Sample flags for a non-sync sample: `sample_depends_on` = 1 (depends on others),
/// `sample_is_non_sync_sample` = 1.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// Why a box could not be written.
#[derive(thiserror::Error, Debug)]
pub enum Fmp4Error {
    /// The codec configuration (CodecPrivate or a parameter) cannot describe this track.
    #[error("invalid {codec} configuration: {reason}")]
    InvalidConfig { codec: &'static str, reason: String },
    /// A fragment needs at least one sample.
    #[error("a fragment needs at least one sample")]
    NoSamples,
    /// Sample `index` does not start where the previous one ends (dts + duration).
    #[error("sample {index}: dts {dts} does not follow the previous sample (expected {expected})")]
    DtsGap {
        index: usize,
        dts: u64,
        expected: u64,
    },
    /// The composition offset (pts − dts) of sample `index` does not fit a signed 32-bit
    /// `trun` field.
    #[error("sample {index}: composition offset {offset} does not fit 32 bits")]
    CompositionOffset { index: usize, offset: i128 },
    /// A sample or the whole `mdat` is larger than the box fields can say.
    #[error("sample {index}: {size} bytes is too large")]
    SampleTooLarge { index: usize, size: usize },
    /// mp4-atom refused to encode a box (a value out of its field's range).
    #[error("box encoding failed: {0}")]
    Encode(#[from] mp4_atom::Error),
}
