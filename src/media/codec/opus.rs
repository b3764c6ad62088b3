//! Opus: the identification header OpusHead (RFC 7845 §5.1), which is Matroska's A_OPUS
//! CodecPrivate, and the `dOps` box of "Encapsulation of Opus in ISO Base Media File
//! Format" (§4.3.2) built from it.
//!
//! Field mapping, OpusHead (little-endian) → dOps (big-endian):
//!
//! | OpusHead                   | dOps                         |
//! |----------------------------|------------------------------|
//! | "OpusHead" magic (8 bytes) | — (not written)              |
//! | version u8 (1)             | Version u8, always 0         |
//! | channel count u8           | OutputChannelCount u8        |
//! | pre-skip u16 LE            | PreSkip u16 BE               |
//! | input sample rate u32 LE   | InputSampleRate u32 BE       |
//! | output gain i16 LE (Q7.8)  | OutputGain i16 BE            |
//! | mapping family u8          | ChannelMappingFamily u8      |
//! | stream count u8 (family≠0) | StreamCount u8               |
//! | coupled count u8           | CoupledCount u8              |
//! | mapping[channels] u8       | ChannelMapping[channels] u8  |

use super::CodecError;
use super::bits::ByteReader;

const HEAD: &str = "Opus OpusHead";

/// A parsed OpusHead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusHead {
    pub version: u8,
    pub channels: u8,
    /// Samples at 48 kHz to drop at the start.
    pub pre_skip: u16,
    /// The original input rate; informational only (Opus always decodes at 48 kHz).
    pub input_sample_rate: u32,
    /// Q7.8 dB.
    pub output_gain: i16,
    pub mapping_family: u8,
    /// Present when mapping_family ≠ 0.
    pub mapping: Option<ChannelMapping>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelMapping {
    pub stream_count: u8,
    pub coupled_count: u8,
    /// One entry per output channel: the decoded channel index, or 255 for silence.
    pub mapping: Vec<u8>,
}

impl OpusHead {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(data, HEAD);
        if r.bytes(8, "magic")? != b"OpusHead" {
            return Err(CodecError::Invalid {
                what: HEAD,
                reason: "does not start with \"OpusHead\"".into(),
            });
        }
        let version = r.u8("version")?;
        // RFC 7845: reject when the major version (upper four bits) is not 0.
        if version >> 4 != 0 {
            return Err(CodecError::BadValue {
                what: HEAD,
                field: "version",
                value: u64::from(version),
                expected: "a 0.x version (1..15)",
            });
        }
        let channels = r.u8("channel count")?;
        if channels == 0 {
            return Err(CodecError::BadValue {
                what: HEAD,
                field: "channel count",
                value: 0,
                expected: "at least 1",
            });
        }
        let pre_skip = r.u16_le("pre-skip")?;
        let input_sample_rate = r.u32_le("input sample rate")?;
        let output_gain = r.i16_le("output gain")?;
        let mapping_family = r.u8("channel mapping family")?;
        let mapping = if mapping_family == 0 {
            if channels > 2 {
                return Err(CodecError::Invalid {
                    what: HEAD,
                    reason: format!("mapping family 0 allows 1 or 2 channels, not {channels}"),
                });
            }
            None
        } else {
            let stream_count = r.u8("stream count")?;
            let coupled_count = r.u8("coupled count")?;
            if stream_count == 0 || coupled_count > stream_count {
                return Err(CodecError::Invalid {
                    what: HEAD,
                    reason: format!(
                        "{stream_count} streams with {coupled_count} coupled (needs ≥ 1 stream \
                         and coupled ≤ streams)"
                    ),
                });
            }
            let mapping = r.bytes(usize::from(channels), "channel mapping")?.to_vec();
            let decoded = u16::from(stream_count) + u16::from(coupled_count);
            if let Some(bad) = mapping
                .iter()
                .find(|&&m| m != 255 && u16::from(m) >= decoded)
            {
                return Err(CodecError::Invalid {
                    what: HEAD,
                    reason: format!(
                        "channel mapping entry {bad} is not below {decoded} decoded channels"
                    ),
                });
            }
            Some(ChannelMapping {
                stream_count,
                coupled_count,
                mapping,
            })
        };
        Ok(OpusHead {
            version,
            channels,
            pre_skip,
            input_sample_rate,
            output_gain,
            mapping_family,
            mapping,
        })
    }

    /// The body of a `dOps` box (everything after the 8-byte box header); see the module
    /// documentation for the field mapping.
    pub fn dops_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11 + 2 + usize::from(self.channels));
        out.push(0);
        out.push(self.channels);
        out.extend_from_slice(&self.pre_skip.to_be_bytes());
        out.extend_from_slice(&self.input_sample_rate.to_be_bytes());
        out.extend_from_slice(&self.output_gain.to_be_bytes());
        out.push(self.mapping_family);
        if let Some(m) = &self.mapping {
            out.push(m.stream_count);
            out.push(m.coupled_count);
            out.extend_from_slice(&m.mapping);
        }
        out
    }

    /// RFC 6381 / MSE codec string. The sample entry is `Opus`; browsers and hls.js take
    /// `opus` (Firefox: "Opus" is the registered value, "opus" accepted for history).
    pub fn codec_string(&self) -> &'static str {
        "opus"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEREO: [u8; 19] = [
        b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn stereo_family_0() {
        let h = OpusHead::parse(&STEREO).unwrap();
        assert_eq!(h.channels, 2);
        assert_eq!(h.pre_skip, 312);
        assert_eq!(h.input_sample_rate, 48000);
        assert_eq!(h.mapping, None);
        assert_eq!(
            h.dops_payload(),
            [0, 2, 0x01, 0x38, 0, 0, 0xBB, 0x80, 0, 0, 0]
        );
        for n in 0..STEREO.len() {
            assert!(OpusHead::parse(&STEREO[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn surround_family_1() {
        // 5.1: 4 streams, 2 coupled, Vorbis channel order.
        let mut d = STEREO.to_vec();
        d[9] = 6;
        d[18] = 1;
        d.extend_from_slice(&[4, 2, 0, 4, 1, 2, 3, 5]);
        d[16..18].copy_from_slice(&(-256i16).to_le_bytes());
        let h = OpusHead::parse(&d).unwrap();
        let m = h.mapping.as_ref().unwrap();
        assert_eq!((m.stream_count, m.coupled_count), (4, 2));
        assert_eq!(m.mapping, [0, 4, 1, 2, 3, 5]);
        assert_eq!(h.output_gain, -256);
        let dops = h.dops_payload();
        assert_eq!(&dops[8..11], &[0xFF, 0x00, 1]);
        assert_eq!(&dops[11..], &[4, 2, 0, 4, 1, 2, 3, 5]);
        // A mapping entry past the decoded channels, and a truncated table.
        let mut bad = d.clone();
        bad[21] = 6;
        assert!(OpusHead::parse(&bad).is_err());
        assert!(OpusHead::parse(&d[..d.len() - 1]).is_err());
    }

    #[test]
    fn refusals() {
        let mut d = STEREO.to_vec();
        d[9] = 3;
        assert!(
            OpusHead::parse(&d)
                .unwrap_err()
                .to_string()
                .contains("family 0")
        );
        d[9] = 2;
        d[8] = 0x10;
        assert!(OpusHead::parse(&d).is_err());
        assert!(OpusHead::parse(b"OpusTags\x01\x02").is_err());
    }
}
