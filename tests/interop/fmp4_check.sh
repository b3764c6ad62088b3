#!/usr/bin/env bash
# The CMAF writer (src/mux/fmp4) read by an independent implementation: ffprobe/ffmpeg.
#
#   tests/interop/fmp4_check.sh [FILE.mkv ...]    # default: the five testdata files
#
# `examples/fmp4_dump.rs` remuxes each file with the crate's own demuxer and writer into
# one file per track (init segment + chunks with styp/prft), plus the samples it wrote.
# For every track file this checks:
#   1. `ffprobe -v error` and `ffmpeg -v error -i F -f null -` (full decode, and the null
#      muxer's monotonic-DTS check) print nothing;
#   2. ffprobe's packets are exactly the written samples: pts, dts, duration (where ffprobe
#      reports one) and keyframe flag, in ticks;
#   3. DTS strictly increasing and DTS <= PTS for every packet;
#   4. the packet count and every pts match ffprobe's view of the source stream (within the
#      source's 1 ms timestamp precision; Opus: one constant offset, ffprobe subtracting
#      CodecDelay from the Matroska source only).
# Prints one PASS/FAIL line per track file; exits non-zero if any failed.
# Needs: cargo, python3 (stdlib only), ffmpeg/ffprobe.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

for tool in cargo python3 ffmpeg ffprobe; do
    command -v "$tool" >/dev/null || { echo "FAIL fmp4.setup: $tool not found"; exit 1; }
done

out="$(mktemp -d "${TMPDIR:-/tmp}/muxcast-fmp4.XXXXXX")"
trap 'if [[ $? -eq 0 && "${KEEP_WORKDIR:-0}" != 1 ]]; then rm -rf "$out"; else echo "fmp4: files kept in $out"; fi' EXIT

files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
    files=(testdata/h264_aac.mkv testdata/vp9_opus.webm testdata/h265_aac.mkv
           testdata/av1_opus.mkv testdata/h264_flac.mkv)
fi

timeout 900 cargo run --quiet --example fmp4_dump -- "$out" "${files[@]}" >"$out/dump.log"

fail=0
for src in "${files[@]}"; do
    stem="$(basename "$src")"
    for mp4 in "$out/$stem".*.mp4; do
        [[ -e "$mp4" ]] || { echo "FAIL fmp4.$stem: no track written"; fail=1; continue; }
        name="$(basename "$mp4" .mp4)"
        base="${mp4%.mp4}"
        index="${name##*.}"
        problems=""
        probe_err="$(ffprobe -v error "$mp4" 2>&1 || echo "ffprobe exited $?")"
        [[ -z "$probe_err" ]] || problems+="ffprobe: $probe_err; "
        decode_err="$(ffmpeg -nostdin -v error -i "$mp4" -f null - 2>&1 || echo "ffmpeg exited $?")"
        [[ -z "$decode_err" ]] || problems+="ffmpeg: $decode_err; "
        ffprobe -v error -show_entries packet=pts,dts,duration,flags -of csv=p=0 "$mp4" \
            >"$base.packets"
        ffprobe -v error -select_streams "$index" -show_entries packet=pts_time,dts_time \
            -of csv=p=0 "$src" >"$base.source"
        verdict="$(python3 - "$base" <<'PY'
import sys

base = sys.argv[1]
timescale, origin_ns, codec, fourcc = open(base + ".meta").read().split()
timescale, origin_ns = int(timescale), int(origin_ns)
expected = [tuple(int(x) for x in l.split()) for l in open(base + ".expected")]
got = []
for line in open(base + ".packets"):
    pts, dts, dur, flags = line.strip().split(",")[:4]
    got.append((int(pts), int(dts), None if dur == "N/A" else int(dur), int("K" in flags)))
source = [float(l.split(",")[0]) for l in open(base + ".source") if l.strip()]
problems = []

if len(got) != len(expected):
    problems.append(f"{len(got)} packets read, {len(expected)} written")
for i, (g, e) in enumerate(zip(got, expected)):
    pts, dts, dur, key = g
    if (pts, dts, key) != (e[0], e[1], e[3]) or (dur is not None and dur != e[2]):
        problems.append(f"packet {i}: read {g}, wrote {e}")
        break
dts = [g[1] for g in got]
if any(b <= a for a, b in zip(dts, dts[1:])):
    problems.append("DTS not strictly increasing")
if any(g[1] > g[0] for g in got):
    problems.append("DTS > PTS")

# Against the source: same count, same pts (source in ms, rounded).
if len(source) != len(got):
    problems.append(f"{len(got)} packets, source has {len(source)}")
ours = [g[0] / timescale + origin_ns / 1e9 for g in got]
offset = 0.0
if codec == "opus" and source and ours:
    offset = ours[0] - source[0]
    if abs(offset) > 0.010:
        problems.append(f"Opus offset {offset * 1000:.3f} ms")
# The source stores milliseconds (TimestampScale 1 ms), rounded or truncated by its muxer.
tolerance = 0.001 + 1.0 / timescale + 1e-9
worst = 0.0
for i, (o, s) in enumerate(zip(ours, source)):
    d = abs(o - offset - s)
    worst = max(worst, d)
    if d > tolerance:
        problems.append(f"packet {i}: pts {o:.6f} s vs source {s:.6f} s")
        break
span = f"{len(got)} packets, {codec}/{fourcc}, pts within {worst * 1000:.3f} ms of the source"
if offset:
    span += f" (offset {offset * 1000:.3f} ms)"
print("; ".join(problems) if problems else "OK " + span)
PY
)"
        if [[ "$verdict" == OK* && -z "$problems" ]]; then
            echo "PASS fmp4.$name: ${verdict#OK }"
        else
            echo "FAIL fmp4.$name: $problems${verdict#OK }"
            fail=1
        fi
    done
done
exit "$fail"
