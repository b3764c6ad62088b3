#![no_main]
//! Codec configuration records (avcC, SPS, hvcC, ASC, OpusHead, VP9 headers, av1C, FLAC)
//! and `cmaf_info`; the first byte picks the parser.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    muxcast::fuzzing::codec_config(data);
});
