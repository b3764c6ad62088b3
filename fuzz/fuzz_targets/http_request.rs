#![no_main]
//! Request heads, query strings and routing.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    muxcast::fuzzing::http_request(data);
});
