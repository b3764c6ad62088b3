#![no_main]
//! Chunked and length-delimited bodies (push ingest, HTTP pull).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    muxcast::fuzzing::http_body(data);
});
