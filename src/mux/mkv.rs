//! The live Matroska writer: an EBML header, a Segment of unknown size, Info, Tracks, then
//! unknown-size Clusters of SimpleBlocks, each written whole as its frame arrives.
//!
//! Unknown sizes are what make the output live: nothing already sent ever needs patching.
//! They are written in the 1-byte form (0xFF), which every Matroska reader we know of
//! treats as unknown (some read the 8-byte form as a huge real size).

use bytes::{BufMut, Bytes, BytesMut};

use super::arena::Arena;
use crate::media::{Track, TrackKind};

const EBML: u32 = 0x1A45_DFA3;
const EBML_VERSION: u32 = 0x4286;
const EBML_READ_VERSION: u32 = 0x42F7;
const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
const DOC_TYPE: u32 = 0x4282;
const DOC_TYPE_VERSION: u32 = 0x4287;
const DOC_TYPE_READ_VERSION: u32 = 0x4285;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9C;
const LANGUAGE: u32 = 0x22_B59C;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CODEC_DELAY: u32 = 0x56AA;
const SEEK_PRE_ROLL: u32 = 0x56BB;
const DEFAULT_DURATION: u32 = 0x23_E383;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const DISPLAY_WIDTH: u32 = 0x54B0;
const DISPLAY_HEIGHT: u32 = 0x54BA;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const BIT_DEPTH: u32 = 0x6264;
const CLUSTER: u32 = 0x1F43_B675;
const CLUSTER_TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;

/// The output timestamp unit: milliseconds, Matroska's default and what players expect.
pub const TIMESTAMP_SCALE_NS: u64 = 1_000_000;

/// Which flavour of Matroska to declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocType {
    Matroska,
    Webm,
}

impl DocType {
    fn name(self) -> &'static str {
        match self {
            DocType::Matroska => "matroska",
            DocType::Webm => "webm",
        }
    }
}

fn put_id(out: &mut BytesMut, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    out.put_slice(&bytes[skip..]);
}

/// Writes `size` as the shortest EBML VINT that can hold it (never the all-ones pattern,
/// which means "unknown").
fn put_size(out: &mut BytesMut, size: u64) {
    let len = size_len(size);
    let marked = size | (1u64 << (7 * len));
    out.put_slice(&marked.to_be_bytes()[8 - len..]);
}

fn put_unknown_size(out: &mut BytesMut) {
    out.put_u8(0xFF);
}

fn put_master(out: &mut BytesMut, id: u32, body: &[u8]) {
    put_id(out, id);
    put_size(out, body.len() as u64);
    out.put_slice(body);
}

fn put_uint(out: &mut BytesMut, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    put_master(out, id, &bytes[skip..]);
}

fn put_float(out: &mut BytesMut, id: u32, value: f64) {
    put_master(out, id, &value.to_be_bytes());
}

fn put_str(out: &mut BytesMut, id: u32, value: &str) {
    put_master(out, id, value.as_bytes());
}

fn track_entry(number: u64, track: &Track) -> BytesMut {
    let mut e = BytesMut::with_capacity(128);
    put_uint(&mut e, TRACK_NUMBER, number);
    put_uint(&mut e, TRACK_UID, number);
    let track_type = match track.kind() {
        TrackKind::Video => 1,
        TrackKind::Audio => 2,
    };
    put_uint(&mut e, TRACK_TYPE, track_type);
    put_uint(&mut e, FLAG_LACING, 0);
    if let Some(lang) = &track.language {
        put_str(&mut e, LANGUAGE, lang);
    }
    put_str(&mut e, CODEC_ID, &track.codec_id);
    if let Some(private) = &track.codec_private {
        put_master(&mut e, CODEC_PRIVATE, private);
    }
    if let Some(d) = track.default_duration_ns {
        put_uint(&mut e, DEFAULT_DURATION, d);
    }
    if let Some(d) = track.codec_delay_ns {
        put_uint(&mut e, CODEC_DELAY, d);
    }
    if let Some(d) = track.seek_pre_roll_ns {
        put_uint(&mut e, SEEK_PRE_ROLL, d);
    }
    if let Some(v) = &track.video {
        let mut body = BytesMut::new();
        put_uint(&mut body, PIXEL_WIDTH, v.width.into());
        put_uint(&mut body, PIXEL_HEIGHT, v.height.into());
        if let Some(w) = v.display_width {
            put_uint(&mut body, DISPLAY_WIDTH, w.into());
        }
        if let Some(h) = v.display_height {
            put_uint(&mut body, DISPLAY_HEIGHT, h.into());
        }
        put_master(&mut e, VIDEO, &body);
    }
    if let Some(a) = &track.audio {
        let mut body = BytesMut::new();
        put_float(&mut body, SAMPLING_FREQUENCY, a.sample_rate);
        put_uint(&mut body, CHANNELS, a.channels.into());
        if let Some(bits) = a.bit_depth {
            put_uint(&mut body, BIT_DEPTH, bits.into());
        }
        put_master(&mut e, AUDIO, &body);
    }
    e
}

/// Everything a viewer needs before the first Cluster: EBML header, the start of an
/// unknown-size Segment, Info and Tracks. Track numbers are the track indices plus one.
pub fn header(tracks: &[Track], doc_type: DocType) -> Bytes {
    let mut ebml = BytesMut::new();
    put_uint(&mut ebml, EBML_VERSION, 1);
    put_uint(&mut ebml, EBML_READ_VERSION, 1);
    put_uint(&mut ebml, EBML_MAX_ID_LENGTH, 4);
    put_uint(&mut ebml, EBML_MAX_SIZE_LENGTH, 8);
    put_str(&mut ebml, DOC_TYPE, doc_type.name());
    put_uint(&mut ebml, DOC_TYPE_VERSION, 4);
    put_uint(&mut ebml, DOC_TYPE_READ_VERSION, 2);

    let mut info = BytesMut::new();
    put_uint(&mut info, TIMESTAMP_SCALE, TIMESTAMP_SCALE_NS);
    put_str(&mut info, MUXING_APP, "muxcast");
    put_str(
        &mut info,
        WRITING_APP,
        concat!("muxcast ", env!("CARGO_PKG_VERSION")),
    );

    let mut entries = BytesMut::new();
    for (i, track) in tracks.iter().enumerate() {
        put_master(&mut entries, TRACK_ENTRY, &track_entry(i as u64 + 1, track));
    }

    let mut out = BytesMut::with_capacity(64 + info.len() + entries.len());
    put_master(&mut out, EBML, &ebml);
    put_id(&mut out, SEGMENT);
    put_unknown_size(&mut out);
    put_master(&mut out, INFO, &info);
    put_master(&mut out, TRACKS, &entries);
    out.freeze()
}

/// The start of an unknown-size Cluster at `timestamp_ms`.
pub fn put_cluster_start(out: &mut BytesMut, timestamp_ms: u64) {
    put_id(out, CLUSTER);
    put_unknown_size(out);
    put_uint(out, CLUSTER_TIMESTAMP, timestamp_ms);
}

/// One SimpleBlock, unlaced. `track_index` is the index into the track list.
pub fn put_simple_block(
    out: &mut BytesMut,
    track_index: usize,
    relative_ms: i16,
    keyframe: bool,
    data: &[u8],
) {
    put_simple_block_head(out, track_index, relative_ms, keyframe, data.len());
    out.put_slice(data);
}

/// The bytes of a SimpleBlock before its frame of `data_len` bytes.
fn put_simple_block_head(
    out: &mut BytesMut,
    track_index: usize,
    relative_ms: i16,
    keyframe: bool,
    data_len: usize,
) {
    let track = track_index as u64 + 1;
    // The track number's VINT, the 16-bit timestamp and the flags byte.
    let head_len = size_len(track) + 3;
    put_id(out, SIMPLE_BLOCK);
    put_size(out, (head_len + data_len) as u64);
    put_size(out, track);
    out.put_i16(relative_ms);
    out.put_u8(if keyframe { 0x80 } else { 0 });
}

/// The length of `size` written by [`put_size`].
fn size_len(size: u64) -> usize {
    let mut len = 1;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    len
}

/// Why a Cluster boundary is needed before a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// A new GOP: the frame is a keyframe of the primary video track (or an audio-only
    /// stream reached its cluster duration). Viewers may start here.
    Gop,
    /// Only a Cluster boundary: the frame is too far from the Cluster timestamp for a
    /// 16-bit relative timestamp. Not a place to start.
    Overflow,
}

/// Cluster/GOP policy and block writing for one stream's live Matroska output.
pub struct ClusterWriter {
    cluster_ms: Option<u64>,
    /// Audio-only streams have no keyframes to cut at: cut on duration.
    audio_cluster_ms: u64,
    primary_video: Option<usize>,
    need_keyframe: bool,
    kinds: Vec<TrackKind>,
    /// A frame's Cluster start and block header, before they go into `arena`.
    head: BytesMut,
    /// Where written frames are kept: many small frames share one allocation.
    arena: Arena,
}

/// Written frames are carved out of blocks of this size (frames over an eighth of it get
/// their own buffer).
const ARENA_BLOCK: usize = 64 * 1024;

/// One written frame: its bytes, and whether it starts a GOP.
pub struct WrittenFrame {
    pub bytes: Bytes,
    pub starts_gop: bool,
}

impl ClusterWriter {
    pub fn new(tracks: &[Track], audio_cluster_ms: u64) -> Self {
        ClusterWriter {
            cluster_ms: None,
            audio_cluster_ms: audio_cluster_ms.max(1),
            primary_video: tracks.iter().position(|t| t.kind() == TrackKind::Video),
            need_keyframe: false,
            kinds: tracks.iter().map(Track::kind).collect(),
            head: BytesMut::with_capacity(64),
            arena: Arena::new(ARENA_BLOCK),
        }
    }

    /// Drops video frames until the next keyframe of the primary video track (after
    /// undecodable input, or when a new pass of the input begins). Audio goes on into the
    /// current Cluster: it needs no reference frames.
    pub fn wait_for_keyframe(&mut self) {
        self.need_keyframe = self.primary_video.is_some();
    }

    /// Whether the stream may start a GOP at this frame.
    pub fn is_gop_start(&self, track: usize, keyframe: bool, pts_ms: u64) -> bool {
        match self.primary_video {
            Some(video) => track == video && keyframe,
            None => match self.cluster_ms {
                None => true,
                Some(start) => pts_ms >= start.saturating_add(self.audio_cluster_ms),
            },
        }
    }

    /// Writes a frame at `pts_ms` (output timeline, milliseconds), starting a Cluster
    /// where needed. Returns None for frames before the first GOP start (nothing to
    /// decode them against).
    pub fn write(
        &mut self,
        track: usize,
        pts_ms: i64,
        keyframe: bool,
        data: &[u8],
    ) -> Option<WrittenFrame> {
        let clamped = pts_ms.max(0) as u64;
        let starts_gop = self.is_gop_start(track, keyframe, clamped);
        if self.need_keyframe && self.kinds.get(track) == Some(&TrackKind::Video) {
            if !starts_gop {
                return None;
            }
            self.need_keyframe = false;
        }
        let cut = if starts_gop {
            Some(Cut::Gop)
        } else {
            let start = self.cluster_ms?;
            let rel = pts_ms - start as i64;
            (rel > i16::MAX as i64 || rel < i16::MIN as i64).then_some(Cut::Overflow)
        };
        let head = &mut self.head;
        head.clear();
        if cut.is_some() {
            put_cluster_start(head, clamped);
            self.cluster_ms = Some(clamped);
        }
        let start = self.cluster_ms? as i64;
        let rel = (pts_ms - start).clamp(i16::MIN as i64, i16::MAX as i64) as i16;
        // Every audio frame is a random access point; say so, as muxers do.
        let key = keyframe || Some(track) != self.primary_video;
        put_simple_block_head(head, track, rel, key, data.len());
        let bytes = self.arena.write(head.len() + data.len(), |out| {
            out.extend_from_slice(head);
            out.extend_from_slice(data);
        });
        Some(WrittenFrame { bytes, starts_gop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_shortest_form_and_never_all_ones() {
        let enc = |n| {
            let mut b = BytesMut::new();
            put_size(&mut b, n);
            b.to_vec()
        };
        assert_eq!(enc(0), vec![0x80]);
        assert_eq!(enc(126), vec![0xFE]);
        // 127 in one byte would be 0xFF, the unknown-size marker.
        assert_eq!(enc(127), vec![0x40, 0x7F]);
        assert_eq!(enc(16382), vec![0x7F, 0xFE]);
        assert_eq!(enc(16383), vec![0x20, 0x3F, 0xFF]);
    }

    #[test]
    fn ids_keep_their_marker_bytes() {
        let mut b = BytesMut::new();
        put_id(&mut b, SIMPLE_BLOCK);
        put_id(&mut b, CODEC_PRIVATE);
        put_id(&mut b, CLUSTER);
        assert_eq!(b.to_vec(), vec![0xA3, 0x63, 0xA2, 0x1F, 0x43, 0xB6, 0x75]);
    }

    #[test]
    fn drops_frames_before_first_keyframe_and_cuts_at_keyframes() {
        let tracks = vec![
            test_track(crate::media::Codec::H264),
            test_track(crate::media::Codec::Aac),
        ];
        let mut w = ClusterWriter::new(&tracks, 2000);
        assert!(
            w.write(1, 0, true, b"a").is_none(),
            "audio before first keyframe"
        );
        assert!(
            w.write(0, 0, false, b"p").is_none(),
            "delta before first keyframe"
        );
        let k = w.write(0, 40, true, b"k").unwrap();
        assert!(k.starts_gop);
        assert_eq!(&k.bytes[..4], &[0x1F, 0x43, 0xB6, 0x75]);
        let a = w.write(1, 30, true, b"a").unwrap();
        assert!(!a.starts_gop);
        // SimpleBlock, size, track 2, relative -10 ms, keyframe flag.
        assert_eq!(
            a.bytes.to_vec(),
            vec![0xA3, 0x85, 0x82, 0xFF, 0xF6, 0x80, b'a']
        );
    }

    #[test]
    fn long_gaps_start_a_cluster_that_is_not_a_gop() {
        let tracks = vec![test_track(crate::media::Codec::H264)];
        let mut w = ClusterWriter::new(&tracks, 2000);
        w.write(0, 0, true, b"k").unwrap();
        let late = w.write(0, 40_000, false, b"p").unwrap();
        assert!(!late.starts_gop);
        assert_eq!(&late.bytes[..4], &[0x1F, 0x43, 0xB6, 0x75]);
    }

    #[test]
    fn after_a_resync_video_waits_for_a_keyframe_and_audio_goes_on() {
        let tracks = vec![
            test_track(crate::media::Codec::H264),
            test_track(crate::media::Codec::Aac),
        ];
        let mut w = ClusterWriter::new(&tracks, 2000);
        w.write(0, 0, true, b"k").unwrap();
        w.wait_for_keyframe();
        assert!(w.write(0, 40, false, b"p").is_none());
        assert!(!w.write(1, 50, true, b"a").unwrap().starts_gop);
        assert!(w.write(0, 80, true, b"k").unwrap().starts_gop);
        assert!(w.write(0, 120, false, b"p").is_some());
    }

    #[test]
    fn audio_only_cuts_on_duration() {
        let tracks = vec![test_track(crate::media::Codec::Opus)];
        let mut w = ClusterWriter::new(&tracks, 2000);
        assert!(w.write(0, 0, true, b"a").unwrap().starts_gop);
        assert!(!w.write(0, 1980, true, b"a").unwrap().starts_gop);
        assert!(w.write(0, 2000, true, b"a").unwrap().starts_gop);
    }

    #[test]
    fn an_independent_parser_reads_what_we_write() {
        use crate::media::{AudioInfo, Codec, VideoInfo};
        let mut video = test_track(Codec::H264);
        video.codec_id = "V_MPEG4/ISO/AVC".into();
        video.codec_private = Some(Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff]));
        video.video = Some(VideoInfo {
            width: 320,
            height: 240,
            ..VideoInfo::default()
        });
        let mut audio = test_track(Codec::Opus);
        audio.codec_id = "A_OPUS".into();
        audio.codec_delay_ns = Some(6_500_000);
        audio.audio = Some(AudioInfo {
            sample_rate: 48000.0,
            channels: 2,
            bit_depth: None,
        });
        let tracks = vec![video, audio];
        let mut out = BytesMut::new();
        out.extend_from_slice(&header(&tracks, DocType::Webm));
        let mut w = ClusterWriter::new(&tracks, 2000);
        let mut want = Vec::new();
        for i in 0..100i64 {
            let (track, pts, key) = if i % 2 == 0 {
                (0, i * 20, i % 50 == 0)
            } else {
                (1, i * 20 - 5, true)
            };
            let data = vec![i as u8; 10 + i as usize * 37];
            if let Some(f) = w.write(track, pts, key, &data) {
                out.extend_from_slice(&f.bytes);
                want.push((track as u64 + 1, pts as u64, data));
            }
        }
        let mut mkv =
            matroska_demuxer::MatroskaFile::open(std::io::Cursor::new(out.to_vec())).unwrap();
        assert_eq!(mkv.ebml_header().doc_type(), "webm");
        assert_eq!(mkv.tracks().len(), 2);
        assert_eq!(
            mkv.tracks()[0].codec_private(),
            Some(&[1, 0x64, 0, 0x1f, 0xff][..])
        );
        assert_eq!(mkv.tracks()[1].codec_delay(), Some(6_500_000));
        let mut got = Vec::new();
        let mut f = matroska_demuxer::Frame::default();
        while mkv.next_frame(&mut f).unwrap() {
            got.push((f.track, f.timestamp, f.data.clone()));
        }
        assert_eq!(got, want);
    }

    pub(crate) fn test_track(codec: crate::media::Codec) -> Track {
        Track {
            codec,
            codec_id: "X".into(),
            codec_private: None,
            video: None,
            audio: None,
            default_duration_ns: None,
            codec_delay_ns: None,
            seek_pre_roll_ns: None,
            language: None,
        }
    }
}
