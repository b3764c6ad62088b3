//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), which Matroska's A_AAC
//! CodecPrivate, MP4's esds DecoderSpecificInfo and RTSP's mpeg4-generic `config=` all
//! carry, and one built from (object type, sample rate, channels).
//!
//! Read: the audio object type (with the escape to 32+), the sampling frequency (index or
//! explicit 24-bit rate), the channel configuration, explicit hierarchical SBR/PS
//! signalling (object types 5 and 29), and the backward-compatible sync extension
//! (0x2B7 / 0x548) after a GASpecificConfig when that can be stepped over cheaply (channel
//! configuration ≠ 0, i.e. no program_config_element). Not read: the PCE itself (channel
//! counts for configuration 0 come from the container), ER and non-GA object types' own
//! configs.

use bytes::Bytes;

use super::CodecError;
use super::bits::{BitReader, BitWriter};

const ASC: &str = "AAC AudioSpecificConfig";

/// Sampling frequencies by samplingFrequencyIndex (Table 1.18).
pub const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

pub const AOT_AAC_LC: u8 = 2;
pub const AOT_SBR: u8 = 5;
pub const AOT_PS: u8 = 29;

/// A parsed AudioSpecificConfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// The object type of the core coder (2 for AAC-LC, also under HE-AAC).
    pub object_type: u8,
    /// The first object type in the record: 5 or 29 for explicit hierarchical HE-AAC
    /// signalling, otherwise the same as `object_type`.
    pub signalled_object_type: u8,
    /// The core coder's sampling rate.
    pub sample_rate: u32,
    /// Channel configuration 1–7, 11–14; 0 means "defined by a program config element".
    pub channel_configuration: u8,
    /// Whether SBR is signalled present (`Some(true)`), signalled absent (`Some(false)`, as
    /// ffmpeg writes for plain LC) or not signalled (`None`: implicit, a decoder finds out
    /// from the bitstream).
    pub sbr: Option<bool>,
    pub ps: Option<bool>,
    /// The output rate when SBR is signalled (twice the core rate, usually).
    pub extension_sample_rate: Option<u32>,
    /// The record as received, for the esds DecoderSpecificInfo.
    pub raw: Bytes,
}

impl AudioSpecificConfig {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = BitReader::new(data, ASC);
        r.field("audioObjectType");
        let signalled_object_type = read_object_type(&mut r)?;
        if signalled_object_type == 0 {
            return Err(CodecError::BadValue {
                what: ASC,
                field: "audioObjectType",
                value: 0,
                expected: "not 0 (null object)",
            });
        }
        r.field("samplingFrequency");
        let sample_rate = read_frequency(&mut r)?;
        r.field("channelConfiguration");
        let channel_configuration = r.bits(4)? as u8;
        if channel_configuration == 15 {
            return Err(CodecError::BadValue {
                what: ASC,
                field: "channelConfiguration",
                value: 15,
                expected: "0..14",
            });
        }
        let mut object_type = signalled_object_type;
        let mut sbr = None;
        let mut ps = None;
        let mut extension_sample_rate = None;
        if matches!(signalled_object_type, AOT_SBR | AOT_PS) {
            sbr = Some(true);
            if signalled_object_type == AOT_PS {
                ps = Some(true);
            }
            r.field("extensionSamplingFrequency");
            extension_sample_rate = Some(read_frequency(&mut r)?);
            r.field("audioObjectType");
            object_type = read_object_type(&mut r)?;
        }
        // The backward-compatible extension follows a GASpecificConfig; step over it when
        // that is cheap (no PCE) and look for the sync word.
        let ga = matches!(object_type, 1..=4 | 6 | 7 | 17 | 19..=23);
        if sbr.is_none()
            && ga
            && channel_configuration != 0
            && let Ok(Some((s, p, rate))) = sync_extension(&mut r, object_type)
        {
            sbr = Some(s);
            ps = p;
            extension_sample_rate = rate;
        }
        Ok(AudioSpecificConfig {
            object_type,
            signalled_object_type,
            sample_rate,
            channel_configuration,
            sbr,
            ps,
            extension_sample_rate,
            raw: Bytes::copy_from_slice(data),
        })
    }

    /// Channels for the channel configuration (Table 1.19), `None` for 0 (PCE) or a
    /// reserved value.
    pub fn channels(&self) -> Option<u32> {
        Some(match self.channel_configuration {
            1..=6 => u32::from(self.channel_configuration),
            7 | 12 | 14 => 8,
            11 => 7,
            13 => 24,
            _ => return None,
        })
    }

    /// The decoder's output rate: the SBR rate when SBR is signalled, else the core rate.
    pub fn output_sample_rate(&self) -> u32 {
        match (self.sbr, self.extension_sample_rate) {
            (Some(true), Some(r)) => r,
            _ => self.sample_rate,
        }
    }

    /// The codec string `mp4a.40.<object type>`: 29 when PS is signalled, 5 when SBR is,
    /// otherwise the core object type (2 for AAC-LC). Apple's HLS authoring rules ask for
    /// 5/29 for HE-AAC whichever way it is signalled; Chrome accepts 2, 5, 29 and 42.
    pub fn codec_string(&self) -> String {
        let aot = if self.ps == Some(true) {
            AOT_PS
        } else if self.sbr == Some(true) {
            AOT_SBR
        } else {
            self.object_type
        };
        format!("mp4a.40.{aot}")
    }
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u8, CodecError> {
    let t = r.bits(5)? as u8;
    if t == 31 {
        // 32 + 6 bits: at most 95.
        return Ok(32 + r.bits(6)? as u8);
    }
    Ok(t)
}

fn read_frequency(r: &mut BitReader<'_>) -> Result<u32, CodecError> {
    let index = r.bits(4)?;
    match index {
        0xF => {
            let rate = r.bits(24)?;
            if rate == 0 {
                return Err(CodecError::BadValue {
                    what: ASC,
                    field: "samplingFrequency",
                    value: 0,
                    expected: "not 0",
                });
            }
            Ok(rate)
        }
        i => SAMPLE_RATES
            .get(i as usize)
            .copied()
            .ok_or(CodecError::BadValue {
                what: ASC,
                field: "samplingFrequencyIndex",
                value: u64::from(i),
                expected: "0..12 or 15",
            }),
    }
}

/// After GASpecificConfig: syncExtensionType 0x2B7 announces SBR, then 0x548 PS.
/// Returns (sbr, ps, extension rate) when the sync word is there.
#[allow(clippy::type_complexity)]
fn sync_extension(
    r: &mut BitReader<'_>,
    object_type: u8,
) -> Result<Option<(bool, Option<bool>, Option<u32>)>, CodecError> {
    r.field("GASpecificConfig");
    let _frame_length = r.bit()?;
    if r.bit()? {
        r.bits(14)?; // coreCoderDelay
    }
    let extension = r.bit()?;
    if matches!(object_type, 6 | 20) {
        r.bits(3)?; // layerNr
    }
    if extension {
        if object_type == 22 {
            r.bits(16)?; // numOfSubFrame, layer_length
        }
        if matches!(object_type, 17 | 19 | 20 | 23) {
            r.bits(3)?; // resilience flags
        }
        r.bit()?; // extensionFlag3
    }
    r.field("syncExtension");
    if r.bits_left() < 16 || r.bits(11)? != 0x2B7 {
        return Ok(None);
    }
    if read_object_type(r)? != AOT_SBR {
        return Ok(None);
    }
    let sbr = r.bit()?;
    if !sbr {
        return Ok(Some((false, None, None)));
    }
    let rate = read_frequency(r)?;
    let mut ps = None;
    if r.bits_left() >= 12 && r.bits(11)? == 0x548 {
        ps = Some(r.bit()?);
    }
    Ok(Some((true, ps, Some(rate))))
}

/// An AudioSpecificConfig for an object type, sampling rate and channel count: the rate as
/// an index when it is in the table, else explicit; channels 1–6 as themselves, 8 as
/// configuration 7; a plain GASpecificConfig (1024-sample frames, no core coder, no
/// extension). For HE-AAC give the core object type (2) and core rate. AAC-LC at 48 kHz
/// stereo is `11 90`.
pub fn build_asc(object_type: u8, sample_rate: u32, channels: u32) -> Result<Bytes, CodecError> {
    let what = "AAC AudioSpecificConfig builder";
    // 31 is the escape code itself: the escaped range is 32..=95.
    if object_type == 0 || object_type == 31 || object_type > 95 {
        return Err(CodecError::Invalid {
            what,
            reason: format!("audio object type {object_type} is outside 1..30 and 32..95"),
        });
    }
    if matches!(object_type, AOT_SBR | AOT_PS) {
        // Explicit HE-AAC signalling needs the core object type and both rates; the core
        // config alone (object type 2, core rate) plays everywhere with implicit SBR.
        return Err(CodecError::Invalid {
            what,
            reason: format!(
                "object type {object_type} (HE-AAC) needs the core object type and rate: give \
                 2 and the core rate"
            ),
        });
    }
    let channel_configuration = match channels {
        1..=6 => channels,
        8 => 7,
        _ => {
            return Err(CodecError::Invalid {
                what,
                reason: format!(
                    "{channels} channels have no channel configuration (1-6 or 8); a program \
                     config element would be needed"
                ),
            });
        }
    };
    if sample_rate == 0 || sample_rate >= 1 << 24 {
        return Err(CodecError::Invalid {
            what,
            reason: format!("sampling rate {sample_rate} Hz does not fit 24 bits"),
        });
    }
    let mut w = BitWriter::default();
    if object_type >= 31 {
        w.put(5, 31);
        w.put(6, u32::from(object_type - 32));
    } else {
        w.put(5, u32::from(object_type));
    }
    match SAMPLE_RATES.iter().position(|&r| r == sample_rate) {
        Some(i) => w.put(4, i as u32),
        None => {
            w.put(4, 0xF);
            w.put(24, sample_rate);
        }
    }
    w.put(4, channel_configuration);
    if matches!(object_type, 1..=4 | 6 | 7 | 17 | 19..=23) {
        w.put(1, 0); // frameLengthFlag
        w.put(1, 0); // dependsOnCoreCoder
        w.put(1, 0); // extensionFlag
        if matches!(object_type, 6 | 20) {
            w.put(3, 0); // layerNr
        }
    }
    Ok(Bytes::from(w.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_48k_stereo_and_build() {
        let asc = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.sample_rate, 48000);
        assert_eq!(asc.channels(), Some(2));
        assert_eq!(asc.sbr, None);
        assert_eq!(asc.codec_string(), "mp4a.40.2");
        assert_eq!(&build_asc(2, 48000, 2).unwrap()[..], &[0x11, 0x90]);
    }

    #[test]
    fn ffmpeg_signals_no_sbr() {
        // ffmpeg's encoder appends the sync extension with sbrPresentFlag = 0.
        let asc = AudioSpecificConfig::parse(&[0x11, 0x90, 0x56, 0xE5, 0x00]).unwrap();
        assert_eq!(asc.sbr, Some(false));
        assert_eq!(asc.output_sample_rate(), 48000);
        assert_eq!(asc.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn explicit_he_aac_v1_and_v2() {
        // AOT 5, 24 kHz core, stereo, extension 48 kHz, core AOT 2.
        let mut w = BitWriter::default();
        w.put(5, 5);
        w.put(4, 6);
        w.put(4, 2);
        w.put(4, 3);
        w.put(5, 2);
        w.put(3, 0);
        let asc = AudioSpecificConfig::parse(&w.finish()).unwrap();
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.signalled_object_type, 5);
        assert_eq!(asc.sample_rate, 24000);
        assert_eq!(asc.output_sample_rate(), 48000);
        assert_eq!(asc.codec_string(), "mp4a.40.5");
        // AOT 29: PS, mono core.
        let mut w = BitWriter::default();
        w.put(5, 29);
        w.put(4, 6);
        w.put(4, 1);
        w.put(4, 3);
        w.put(5, 2);
        w.put(3, 0);
        let asc = AudioSpecificConfig::parse(&w.finish()).unwrap();
        assert_eq!(asc.ps, Some(true));
        assert_eq!(asc.codec_string(), "mp4a.40.29");
    }

    #[test]
    fn backward_compatible_sbr_ps() {
        // LC 24 kHz stereo, GA config, 0x2B7, AOT 5, sbr 1, 48 kHz, 0x548, ps 1.
        let mut w = BitWriter::default();
        w.put(5, 2);
        w.put(4, 6);
        w.put(4, 2);
        w.put(3, 0);
        w.put(11, 0x2B7);
        w.put(5, 5);
        w.put(1, 1);
        w.put(4, 3);
        w.put(11, 0x548);
        w.put(1, 1);
        let asc = AudioSpecificConfig::parse(&w.finish()).unwrap();
        assert_eq!(asc.sbr, Some(true));
        assert_eq!(asc.ps, Some(true));
        assert_eq!(asc.output_sample_rate(), 48000);
        assert_eq!(asc.codec_string(), "mp4a.40.29");
    }

    #[test]
    fn escape_and_explicit_rate() {
        // AOT 42 (USAC, escaped as 31 + 10), explicit 50 kHz, 5.1.
        let asc_bytes = build_asc(42, 50_000, 6).unwrap();
        let asc = AudioSpecificConfig::parse(&asc_bytes).unwrap();
        assert_eq!(asc.object_type, 42);
        assert_eq!(asc.sample_rate, 50_000);
        assert_eq!(asc.channels(), Some(6));
        assert_eq!(asc.codec_string(), "mp4a.40.42");
        // 8 channels is configuration 7.
        let asc = AudioSpecificConfig::parse(&build_asc(2, 44100, 8).unwrap()).unwrap();
        assert_eq!(asc.channel_configuration, 7);
        assert_eq!(asc.channels(), Some(8));
        assert!(build_asc(2, 48000, 7).is_err());
        assert!(build_asc(0, 48000, 2).is_err());
        // Fuzzer find: object type 5 without the extension fields did not parse back.
        assert!(build_asc(5, 12_255_745, 1).is_err());
        assert!(build_asc(29, 24_000, 2).is_err());
        // Fuzzer find: 31 is the escape code, not an object type (31 - 32 overflowed).
        assert!(build_asc(31, 48_000, 2).is_err());
        assert!(build_asc(2, 1 << 24, 2).is_err());
    }

    #[test]
    fn errors_and_truncation() {
        assert!(AudioSpecificConfig::parse(&[]).is_err());
        assert!(AudioSpecificConfig::parse(&[0x10]).is_err());
        // Index 13 is reserved.
        let e = AudioSpecificConfig::parse(&[0x16, 0x90]).unwrap_err();
        assert!(
            e.to_string().contains("samplingFrequencyIndex is 13"),
            "{e}"
        );
        // Null object type.
        assert!(AudioSpecificConfig::parse(&[0x01, 0x90]).is_err());
        let full = [0x2B, 0x8A, 0x08, 0x00];
        for n in 0..full.len() {
            let _ = AudioSpecificConfig::parse(&full[..n]);
        }
    }
}
