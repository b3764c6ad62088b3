//! Codec-neutral description of media: the one shape every ingest produces and every
//! muxer reads.
//!
//! Times are nanoseconds on the stream's timeline. Matroska's TimestampScale need not
//! divide a second evenly and RTP uses 90 kHz, so nanoseconds are the common unit that
//! converts from both without loss worth measuring (an RTP tick rounds to < 0.5 ns and
//! converts back exactly).

pub mod codec;
pub mod g711;

use bytes::Bytes;

/// What kind of elementary stream a track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

/// The codecs muxcast passes through. Anything else is refused when a stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Vp8,
    Vp9,
    Av1,
    Aac,
    Opus,
    Vorbis,
    Flac,
    Mp3,
    /// Linear PCM (`A_PCM/INT/LIT`, `A_PCM/INT/BIG`, `A_PCM/FLOAT/IEEE`).
    Pcm,
    /// G.711 A-law, carried in Matroska as `A_MS/ACM` with format tag 6.
    Alaw,
    /// G.711 µ-law, carried in Matroska as `A_MS/ACM` with format tag 7.
    Mulaw,
    /// Motion JPEG (`V_MJPEG`): each frame a whole baseline JPEG, each one a keyframe.
    Mjpeg,
}

impl Codec {
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::H264 | Codec::H265 | Codec::Vp8 | Codec::Vp9 | Codec::Av1 | Codec::Mjpeg => {
                TrackKind::Video
            }
            _ => TrackKind::Audio,
        }
    }

    /// Whether the WebM subset of Matroska allows this codec.
    pub fn is_webm(self) -> bool {
        matches!(
            self,
            Codec::Vp8 | Codec::Vp9 | Codec::Av1 | Codec::Opus | Codec::Vorbis
        )
    }

    /// A short human name for logs and /status.json.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Vp8 => "vp8",
            Codec::Vp9 => "vp9",
            Codec::Av1 => "av1",
            Codec::Aac => "aac",
            Codec::Opus => "opus",
            Codec::Vorbis => "vorbis",
            Codec::Flac => "flac",
            Codec::Mp3 => "mp3",
            Codec::Pcm => "pcm",
            Codec::Alaw => "pcm_alaw",
            Codec::Mulaw => "pcm_mulaw",
            Codec::Mjpeg => "mjpeg",
        }
    }

    /// Maps a Matroska CodecID (and, for `A_MS/ACM`, the WAVEFORMATEX in CodecPrivate)
    /// to a codec we pass through, or `None` when we do not carry it.
    pub fn from_matroska(codec_id: &str, codec_private: Option<&[u8]>) -> Option<Codec> {
        Some(match codec_id {
            "V_MPEG4/ISO/AVC" => Codec::H264,
            "V_MPEGH/ISO/HEVC" => Codec::H265,
            "V_VP8" => Codec::Vp8,
            "V_VP9" => Codec::Vp9,
            "V_AV1" => Codec::Av1,
            "V_MJPEG" => Codec::Mjpeg,
            "A_OPUS" => Codec::Opus,
            "A_VORBIS" => Codec::Vorbis,
            "A_FLAC" => Codec::Flac,
            "A_MPEG/L3" => Codec::Mp3,
            "A_PCM/INT/LIT" | "A_PCM/INT/BIG" | "A_PCM/FLOAT/IEEE" => Codec::Pcm,
            "A_MS/ACM" => {
                // WAVEFORMATEX starts with a little-endian u16 format tag.
                let tag = codec_private.and_then(|p| p.get(..2))?;
                match u16::from_le_bytes([tag[0], tag[1]]) {
                    6 => Codec::Alaw,
                    7 => Codec::Mulaw,
                    _ => return None,
                }
            }
            // A_AAC, A_AAC/MPEG4/LC, A_AAC/MPEG2/LC/SBR, ... (the old profile-suffixed ids).
            id if id == "A_AAC" || id.starts_with("A_AAC/") => Codec::Aac,
            _ => return None,
        })
    }
}

/// Video properties a player needs before the first frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Display size when it differs from the coded size (anamorphic video).
    pub display_width: Option<u32>,
    pub display_height: Option<u32>,
}

/// Audio properties a player needs before the first frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AudioInfo {
    pub sample_rate: f64,
    pub channels: u32,
    pub bit_depth: Option<u32>,
}

/// One elementary stream of an input, as every muxer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub codec: Codec,
    /// The Matroska CodecID as received (or the one we would write for non-Matroska input);
    /// copied through so live MKV viewers see exactly what the source declared.
    pub codec_id: String,
    /// avcC, hvcC, AudioSpecificConfig, OpusHead, Vorbis/FLAC headers, WAVEFORMATEX...
    pub codec_private: Option<Bytes>,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
    pub default_duration_ns: Option<u64>,
    /// Opus pre-skip and seek pre-roll, needed to decode Opus correctly.
    pub codec_delay_ns: Option<u64>,
    pub seek_pre_roll_ns: Option<u64>,
    pub language: Option<String>,
}

impl Track {
    pub fn kind(&self) -> TrackKind {
        self.codec.kind()
    }

    /// Whether two track lists describe the same streams, so a viewer can go on from one to
    /// the other without a new header (a pusher reconnecting, a file looping).
    pub fn same_streams(a: &[Track], b: &[Track]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.codec == y.codec
                    && x.codec_id == y.codec_id
                    && x.codec_private == y.codec_private
                    && x.video == y.video
                    && x.audio == y.audio
            })
    }
}

/// One access unit of one track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Index into the stream's track list (not the Matroska TrackNumber).
    pub track: usize,
    /// Presentation time in nanoseconds.
    pub pts: i64,
    /// Duration in nanoseconds, when the input said (BlockDuration, DefaultDuration).
    pub duration: Option<u64>,
    /// A random access point: a video keyframe; every audio frame is one.
    pub keyframe: bool,
    /// For H.264/H.265: length-prefixed NAL units as in Matroska/MP4. Otherwise the raw
    /// access unit.
    pub data: Bytes,
}
