//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay in
//! `cargo test`, so a crash found by the fuzzer is replayed by the same code path.

use std::io::Read;

use crate::ingest::body::{BodyFraming, BodyReader};
use crate::ingest::mkv::{DemuxEvent, DemuxLimits, MkvDemuxer};
use crate::server::http;

/// Feeds `data` to the demuxer, whole or in pieces whose sizes come from `seed`, and
/// drains every event. Returns the number of frames seen.
pub fn demux_all(data: &[u8], seed: Option<u8>) -> usize {
    let limits = DemuxLimits {
        max_element_size: 1 << 20,
        max_header_size: 256 << 10,
        max_tracks: 8,
    };
    let mut demux = MkvDemuxer::new(limits);
    let mut frames = 0;
    let mut rest = data;
    let mut state = u32::from(seed.unwrap_or(0)) | 1;
    let mut drain = |demux: &mut MkvDemuxer, eof: bool| -> bool {
        loop {
            let event = if eof {
                demux.finish()
            } else {
                demux.next_event()
            };
            match event {
                Ok(Some(DemuxEvent::Frame(_))) => frames += 1,
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    while !rest.is_empty() {
        let n = match seed {
            None => rest.len(),
            Some(_) => {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                1 + (state as usize % 4096).min(rest.len() - 1)
            }
        };
        demux.feed(&rest[..n]);
        rest = &rest[n..];
        if !drain(&mut demux, false) {
            return frames;
        }
    }
    drain(&mut demux, true);
    frames
}

/// Parses a request head and routes its path.
pub fn http_request(data: &[u8]) {
    if let Ok(Some(req)) = http::parse_request(data) {
        let _ = http::route(&req.path);
        let _ = http::percent_decode(&req.query);
    }
}

/// Reads a body framed by the first byte's choice (chunked, a length, until close).
pub fn http_body(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framing = match mode % 3 {
        0 => BodyFraming::Chunked,
        1 => BodyFraming::Length(u64::from(mode) * 37),
        _ => BodyFraming::None,
    };
    let split = rest.len() / 2;
    let mut r = BodyReader::new(&rest[split..], rest[..split].to_vec(), framing, true);
    let mut out = [0u8; 997];
    while let Ok(n) = r.read(&mut out) {
        if n == 0 {
            break;
        }
    }
}
