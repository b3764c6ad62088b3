#![no_main]
//! The input arriving in pieces (sizes from the first bytes), as a socket delivers it.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&seed, rest)) = data.split_first() {
        muxcast::fuzzing::demux_all(rest, Some(seed));
    }
});
