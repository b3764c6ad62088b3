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
