//! Dev-only: remuxes Matroska files to CMAF track files for `tests/interop/fmp4_check.sh`,
//! which reads them with ffprobe/ffmpeg (cargo test runs no external program).
//!
//! ```text
//! cargo run --example fmp4_dump -- OUT_DIR [FILE.mkv ...]
//! ```
//!
//! With no files, the five testdata files with H.264, H.265, VP9, AV1, AAC, Opus and FLAC.
//! For each carried track of FILE it writes:
//!
//! - `OUT_DIR/STEM.N.mp4`: the init segment, then every chunk (video: a segment with `styp`
//!   and `prft` at each keyframe, parts of at most 5 frames; audio: chunks of 10 frames);
//! - `OUT_DIR/STEM.N.expected`: one line per sample in decode order, `pts dts duration key`
//!   in track ticks, what a reader of the file must find;
//! - `OUT_DIR/STEM.N.meta`: `timescale origin_ns codec fourcc`, to compare with the source.
//!
//! The remux is `src/mux/fmp4/testkit.rs`, the same code the unit tests run.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use muxcast::ingest::mkv::{DemuxEvent, DemuxLimits, MkvDemuxer};
use muxcast::media::{Codec, Frame, Track};
use muxcast::mux::fmp4::*;

#[path = "../src/mux/fmp4/testkit.rs"]
mod testkit;

const DEFAULT_FILES: [&str; 5] = [
    "h264_aac.mkv",
    "vp9_opus.webm",
    "h265_aac.mkv",
    "av1_opus.mkv",
    "h264_flac.mkv",
];

fn fourcc(entry: &SampleEntry) -> &'static str {
    match entry {
        SampleEntry::H264 { .. } => "avc1",
        SampleEntry::H265 { .. } => "hvc1",
        SampleEntry::Vp9 { .. } => "vp09",
        SampleEntry::Av1 { .. } => "av01",
        SampleEntry::Aac { .. } => "mp4a",
        SampleEntry::Opus(_) => "Opus",
        SampleEntry::Flac(_) => "fLaC",
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out_dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/fmp4".into()));
    let mut files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if files.is_empty() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        files = DEFAULT_FILES.iter().map(|f| testdata.join(f)).collect();
    }
    std::fs::create_dir_all(&out_dir)?;

    for file in &files {
        let bytes = std::fs::read(file)?;
        let stem = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("input")
            .to_string();
        let (tracks, _) = testkit::demux(&bytes);
        for out in testkit::remux(&bytes) {
            let path = |ext: &str| out_dir.join(format!("{stem}.{}.{ext}", out.index));
            std::fs::write(path("mp4"), out.file())?;

            let mut expected = Vec::new();
            for s in &out.samples {
                writeln!(
                    expected,
                    "{} {} {} {}",
                    s.pts,
                    s.dts,
                    s.duration,
                    u8::from(s.sync)
                )?;
            }
            std::fs::write(path("expected"), expected)?;
            std::fs::write(
                path("meta"),
                format!(
                    "{} {} {} {}\n",
                    out.config.timescale,
                    out.origin_ns,
                    tracks[out.index].codec.name(),
                    fourcc(&out.config.sample_entry)
                ),
            )?;
            let reorder = if out.config.sample_entry.is_video() {
                format!(", {:?}", out.stats)
            } else {
                String::new()
            };
            println!(
                "{stem} track {}: {} samples in {} chunks, {} at 1/{}{reorder}",
                out.index,
                out.samples.len(),
                out.chunks.len(),
                fourcc(&out.config.sample_entry),
                out.config.timescale,
            );
        }
    }
    Ok(())
}
