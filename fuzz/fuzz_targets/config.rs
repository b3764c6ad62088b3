#![no_main]
//! The configuration file loader (`muxcast --config`, `--check-config`).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    muxcast::fuzzing::config(data);
});
