#![no_main]
//! The muxers (live Matroska and CMAF) on arbitrary frame sequences of real tracks: the
//! output must parse back (see `muxcast::fuzzing::mux_round_trip`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    muxcast::fuzzing::mux_round_trip(data);
});
