//! Replays the committed fuzz corpus and every crash reproducer through the same entry
//! points the fuzz targets use: a regression found once stays fixed.

use std::path::Path;

fn replay(dir: &str, run: impl Fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn mkv_demux_corpus() {
    let n = replay("mkv_demux", |d| {
        muxcast::fuzzing::demux_all(d, None);
    });
    let m = replay("mkv_demux_chunked", |d| {
        if let Some((&seed, rest)) = d.split_first() {
            muxcast::fuzzing::demux_all(rest, Some(seed));
        }
    });
    println!("replayed {n} + {m} demuxer inputs");
}

#[test]
fn http_corpus() {
    let n = replay("http_request", muxcast::fuzzing::http_request);
    let m = replay("http_body", muxcast::fuzzing::http_body);
    println!("replayed {n} request and {m} body inputs");
}

#[test]
fn codec_config_corpus() {
    let n = replay("codec_config", muxcast::fuzzing::codec_config);
    println!("replayed {n} codec configuration inputs");
}

#[test]
fn every_testdata_file_demuxes_in_any_chunking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !["mkv", "mka", "webm"].contains(&ext) {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let whole = muxcast::fuzzing::demux_all(&data, None);
        for seed in [1u8, 7, 200] {
            assert_eq!(
                muxcast::fuzzing::demux_all(&data, Some(seed)),
                whole,
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn mux_round_trip_corpus() {
    let n = replay("mux_round_trip", |d| {
        muxcast::fuzzing::mux_round_trip(d);
    });
    println!("replayed {n} muxer inputs");
}

/// The round trip on real frames (a testdata file's, in the fuzz input's encoding), so
/// its checks run on what a real stream looks like: every frame written, CMAF samples
/// read back from both tracks.
#[test]
fn mux_round_trip_on_real_frames() {
    use muxcast::ingest::mkv::{DemuxEvent, MkvDemuxer};
    let file =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/live_ffmpeg.mkv"))
            .unwrap();
    let mut demux = MkvDemuxer::new(Default::default());
    demux.feed(&file);
    let mut input = vec![0u8];
    let mut last = [0i64; 2];
    let mut frames = 0;
    while let Ok(Some(e)) = demux.next_event() {
        let DemuxEvent::Frame(f) = e else { continue };
        // Payloads are cut to 255 bytes: the format's limit (the muxers do not look).
        let ms = f.pts / 1_000_000;
        let delta = (ms - last[f.track.min(1)]) as i16;
        last[f.track.min(1)] = ms;
        let len = f.data.len().min(255);
        input.push(f.track as u8 | if f.keyframe { 0x80 } else { 0 });
        input.extend_from_slice(&delta.to_le_bytes());
        input.push(len as u8);
        input.extend_from_slice(&f.data[..len]);
        frames += 1;
    }
    let (written, samples) = muxcast::fuzzing::mux_round_trip(&input);
    assert_eq!(written, frames, "every frame from the first keyframe on");
    // Both renditions carry samples (AAC with a 255-byte cut is still an AAC frame to
    // the muxer); the last GOP's parts close at the end.
    assert!(
        samples * 10 >= frames * 9,
        "{samples} CMAF samples of {frames} frames"
    );
}
