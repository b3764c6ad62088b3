#![no_main]
//! The whole input at once into the Matroska demuxer: no panic, bounded memory.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    muxcast::fuzzing::demux_all(data, None);
});
