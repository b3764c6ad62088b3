//! FLAC: Matroska's A_FLAC CodecPrivate ("fLaC" followed by metadata blocks, STREAMINFO
//! first), the STREAMINFO fields, and the `dfLa` box of "Encapsulation of FLAC in ISO Base
//! Media File Format".

use bytes::Bytes;

use super::CodecError;
use super::bits::{BitReader, ByteReader};

const PRIVATE: &str = "FLAC CodecPrivate";

pub const BLOCK_STREAMINFO: u8 = 0;
pub const BLOCK_PADDING: u8 = 1;

/// One metadata block: its type and body (without the 4-byte block header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataBlock {
    pub block_type: u8,
    pub data: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub min_block_size: u16,
    pub max_block_size: u16,
    pub sample_rate: u32,
    pub channels: u8,
    pub bits_per_sample: u8,
    /// 0 when unknown (always, for a live encoder).
    pub total_samples: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlacConfig {
    pub stream_info: StreamInfo,
    /// Every metadata block, STREAMINFO first.
    pub blocks: Vec<MetadataBlock>,
}

/// The block sizes a live encoder of frames of unknown length declares: any size FLAC
/// allows (the minimum FLAC lets STREAMINFO say is 16; a shorter last block is allowed).
pub const LIVE_MIN_BLOCK_SIZE: u16 = 16;
pub const LIVE_MAX_BLOCK_SIZE: u16 = 65535;

/// The highest sample rate STREAMINFO can say (20 bits).
pub const MAX_SAMPLE_RATE: u32 = 0xF_FFFF;

impl StreamInfo {
    /// The STREAMINFO of a live stream we encode from frames whose lengths are not known
    /// in advance (`mux::flac`): every block size allowed, total samples unknown (0).
    pub fn live(sample_rate: u32, channels: u8, bits_per_sample: u8) -> Self {
        StreamInfo {
            min_block_size: LIVE_MIN_BLOCK_SIZE,
            max_block_size: LIVE_MAX_BLOCK_SIZE,
            sample_rate,
            channels,
            bits_per_sample,
            total_samples: 0,
        }
    }

    /// The 34-byte STREAMINFO block body. Frame sizes are written as 0 (unknown) and the
    /// MD5 signature as zeros (not computed), as a live encoder must; fields wider than
    /// their bit width are clamped to it.
    pub fn to_bytes(&self) -> [u8; 34] {
        let mut out = [0u8; 34];
        out[0..2].copy_from_slice(&self.min_block_size.to_be_bytes());
        out[2..4].copy_from_slice(&self.max_block_size.to_be_bytes());
        // Bytes 4..10: minimum and maximum frame size, 24 bits each: 0, unknown.
        let packed: u64 = u64::from(self.sample_rate.min(0xF_FFFF)) << 44
            | u64::from(self.channels.clamp(1, 8) - 1) << 41
            | u64::from(self.bits_per_sample.clamp(4, 32) - 1) << 36
            | self.total_samples.min(0xF_FFFF_FFFF);
        out[10..18].copy_from_slice(&packed.to_be_bytes());
        // Bytes 18..34: the MD5 of the unencoded audio, zero: not computed.
        out
    }
}

impl FlacConfig {
    /// The configuration of a stream we encode ourselves: STREAMINFO only.
    pub fn from_stream_info(stream_info: &StreamInfo) -> Self {
        FlacConfig {
            stream_info: stream_info.clone(),
            blocks: vec![MetadataBlock {
                block_type: BLOCK_STREAMINFO,
                data: Bytes::copy_from_slice(&stream_info.to_bytes()),
            }],
        }
    }

    /// Parses "fLaC" + metadata blocks. A bare 34-byte STREAMINFO (what ffmpeg keeps as
    /// extradata, and what some muxers store) is accepted too.
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        if data.len() == 34 && !data.starts_with(b"fLaC") {
            let stream_info = parse_stream_info(data)?;
            return Ok(FlacConfig {
                stream_info,
                blocks: vec![MetadataBlock {
                    block_type: BLOCK_STREAMINFO,
                    data: Bytes::copy_from_slice(data),
                }],
            });
        }
        let mut r = ByteReader::new(data, PRIVATE);
        if r.bytes(4, "\"fLaC\" marker")? != b"fLaC" {
            return Err(CodecError::Invalid {
                what: PRIVATE,
                reason: "does not start with \"fLaC\"".into(),
            });
        }
        let mut blocks = Vec::new();
        loop {
            let header = r.u32("metadata block header")?;
            let last = header & 0x8000_0000 != 0;
            let block_type = ((header >> 24) & 0x7F) as u8;
            let len = (header & 0x00FF_FFFF) as usize;
            if block_type == 127 {
                return Err(CodecError::BadValue {
                    what: PRIVATE,
                    field: "metadata block type",
                    value: 127,
                    expected: "not 127 (invalid)",
                });
            }
            let body = r.bytes(len, "metadata block")?;
            blocks.push(MetadataBlock {
                block_type,
                data: Bytes::copy_from_slice(body),
            });
            // Bytes after the last block (audio frames a muxer left in) are ignored.
            if last || r.remaining() == 0 {
                break;
            }
        }
        let first = &blocks[0];
        if first.block_type != BLOCK_STREAMINFO {
            return Err(CodecError::Invalid {
                what: PRIVATE,
                reason: format!(
                    "the first metadata block is type {}, not STREAMINFO (0)",
                    first.block_type
                ),
            });
        }
        let stream_info = parse_stream_info(&first.data)?;
        Ok(FlacConfig {
            stream_info,
            blocks,
        })
    }

    /// The body of a `dfLa` box after the 8-byte box header: version 0, flags 0, then the
    /// STREAMINFO block with its last-metadata-block flag set. Only STREAMINFO is kept,
    /// as ffmpeg's MP4 muxer does: the other blocks (seek tables, padding, tags) mean
    /// nothing in fragments.
    pub fn dfla_payload(&self) -> Vec<u8> {
        let si = self.blocks.first().map_or(&[][..], |b| &b.data[..]);
        let mut out = Vec::with_capacity(8 + si.len());
        out.extend_from_slice(&[0, 0, 0, 0]);
        let len = si.len().min(0x00FF_FFFF) as u32;
        out.extend_from_slice(
            &(0x8000_0000 | u32::from(BLOCK_STREAMINFO) << 24 | len).to_be_bytes(),
        );
        out.extend_from_slice(&si[..len as usize]);
        out
    }

    /// MSE codec string: `flac` (the sample entry is `fLaC`; Chrome and Firefox accept
    /// both spellings, ffmpeg's DASH muxer and hls.js use `flac`).
    pub fn codec_string(&self) -> &'static str {
        "flac"
    }
}

fn parse_stream_info(data: &[u8]) -> Result<StreamInfo, CodecError> {
    if data.len() < 34 {
        return Err(CodecError::Truncated {
            what: PRIVATE,
            field: "STREAMINFO",
            have: data.len(),
            need: 34,
        });
    }
    let mut r = BitReader::new(data, PRIVATE);
    r.field("STREAMINFO");
    let min_block_size = r.bits(16)? as u16;
    let max_block_size = r.bits(16)? as u16;
    r.bits(24)?; // min frame size
    r.bits(24)?; // max frame size
    let sample_rate = r.bits(20)?;
    let channels = r.bits(3)? as u8 + 1;
    let bits_per_sample = r.bits(5)? as u8 + 1;
    let total_samples = r.bits64(36)?;
    if sample_rate == 0 {
        return Err(CodecError::BadValue {
            what: PRIVATE,
            field: "STREAMINFO sample rate",
            value: 0,
            expected: "not 0",
        });
    }
    if bits_per_sample < 4 {
        return Err(CodecError::BadValue {
            what: PRIVATE,
            field: "STREAMINFO bits per sample",
            value: u64::from(bits_per_sample),
            expected: "4..32",
        });
    }
    Ok(StreamInfo {
        min_block_size,
        max_block_size,
        sample_rate,
        channels,
        bits_per_sample,
        total_samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ffmpeg's STREAMINFO for testdata/h264_flac.mkv (ffprobe -show_data).
    pub(crate) const STREAMINFO: [u8; 34] = [
        0x12, 0x00, 0x12, 0x00, 0x00, 0x08, 0x5B, 0x00, 0x17, 0x1D, 0x0B, 0xB8, 0x02, 0xF0, 0x00,
        0x01, 0x77, 0x00, 0xC4, 0x7E, 0xF1, 0x18, 0x47, 0xEF, 0x6A, 0x3C, 0xAA, 0xC6, 0x4E, 0xA1,
        0x15, 0x6A, 0x51, 0x31,
    ];

    fn private(extra: &[u8]) -> Vec<u8> {
        let mut d = b"fLaC".to_vec();
        d.extend_from_slice(&[if extra.is_empty() { 0x80 } else { 0x00 }, 0, 0, 34]);
        d.extend_from_slice(&STREAMINFO);
        d.extend_from_slice(extra);
        d
    }

    #[test]
    fn streaminfo() {
        let c = FlacConfig::parse(&private(&[])).unwrap();
        assert_eq!(c.stream_info.sample_rate, 48000);
        assert_eq!(c.stream_info.channels, 2);
        assert_eq!(c.stream_info.bits_per_sample, 16);
        assert_eq!(
            (c.stream_info.min_block_size, c.stream_info.max_block_size),
            (4608, 4608)
        );
        assert_eq!(c.stream_info.total_samples, 96000);
        let dfla = c.dfla_payload();
        assert_eq!(&dfla[..8], &[0, 0, 0, 0, 0x80, 0, 0, 34]);
        assert_eq!(&dfla[8..], &STREAMINFO);
        assert_eq!(FlacConfig::parse(&STREAMINFO).unwrap(), c);
    }

    #[test]
    fn streaminfo_written_back() {
        let c = FlacConfig::parse(&STREAMINFO).unwrap();
        let mut ours = c.stream_info.to_bytes();
        // ffmpeg's has frame sizes and an MD5; ours leaves them zero.
        ours[4..10].copy_from_slice(&STREAMINFO[4..10]);
        ours[18..].copy_from_slice(&STREAMINFO[18..]);
        assert_eq!(ours, STREAMINFO);
        let si = StreamInfo::live(8000, 1, 16);
        let c = FlacConfig::from_stream_info(&si);
        assert_eq!(FlacConfig::parse(&c.blocks[0].data).unwrap(), c);
        assert_eq!(c.dfla_payload().len(), 8 + 34);
    }

    #[test]
    fn more_blocks_and_truncation() {
        // A VORBIS_COMMENT block (type 4) after STREAMINFO, marked last.
        let d = private(&[0x84, 0, 0, 2, 0xAA, 0xBB]);
        let c = FlacConfig::parse(&d).unwrap();
        assert_eq!(c.blocks.len(), 2);
        assert_eq!(c.blocks[1].block_type, 4);
        assert_eq!(c.dfla_payload().len(), 8 + 34);
        for n in 0..d.len() - 6 {
            assert!(FlacConfig::parse(&d[..n]).is_err(), "{n}");
        }
        let mut bad = d.clone();
        bad[4] = 0x04;
        assert!(
            FlacConfig::parse(&bad).is_err(),
            "first block not STREAMINFO"
        );
        assert!(FlacConfig::parse(b"OggS").is_err());
    }
}
